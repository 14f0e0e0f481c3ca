"""The serving runtime's library: what runs in `.venv-serving` and what both environments share.

Nothing here imports Prefect, Feast, Dask, `tasks/`, `flows/` or `blocks/` (ruff TID251 in
deployments/ruff.toml; tests/integration/test_serving_env.py imports every module with the
serving interpreter).
"""
