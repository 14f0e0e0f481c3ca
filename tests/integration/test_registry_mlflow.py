"""The registry on a real `mlflow server` (SQLite, local artifact root) on loopback."""

from __future__ import annotations

import itertools
import multiprocessing as mp
from pathlib import Path

import pytest

from blocks import ModelRegistry
from tasks.registry.mlflow_store import COMPLETE, MlflowRegistry
from tasks.registry.store import AliasConflict, RegistryError
from tests.mlflow_server import MlflowServer

pytestmark = pytest.mark.integration


def _register(url: str, cache: str, i: int) -> int:
    registry = MlflowRegistry(url, cache)
    return registry.register("churn", {"model.txt": f"model {i}".encode()}, {"i": i}).version


def _move_forward(url: str, cache: str, moves: int) -> int:
    registry, won = MlflowRegistry(url, cache), 0
    while won < moves:
        now = registry.aliases("churn").get("champion")
        try:
            registry.set_alias("churn", "champion", 1 + (now or 0) % 8, expected=now)
            won += 1
        except AliasConflict:
            continue
    return won


@pytest.mark.timeout(300)
def test_versions_records_and_aliases_on_mlflow(mlflow_server: MlflowServer, tmp_path: Path):
    url, cache = mlflow_server.url, str(tmp_path / "cache")
    with mp.get_context("spawn").Pool(4) as pool:
        numbers = pool.starmap(_register, [(url, cache, i) for i in range(8)])
    assert sorted(numbers) == list(range(1, 9))  # MLflow numbered them: distinct
    registry = ModelRegistry(backend="mlflow", root_uri=url, cache_dir=cache).registry()
    assert isinstance(registry, MlflowRegistry) and "churn" in registry.models()
    for v in registry.versions("churn"):  # each number holds its own writer's files
        assert registry.read("churn", v.version, "model.txt") == f"model {v.metadata['i']}".encode()
    assert registry.version_uri("churn", 1).startswith("mlflow-artifacts:/")

    # a version whose upload did not finish (no completion tag) is not one
    run = registry.client.create_run(registry._experiment())
    registry.client.create_model_version("churn", f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert [v.version for v in registry.versions("churn")] == list(range(1, 9))

    first = registry.record("churn", 2, "validation", {"evidence.json": b"{}", "p.png": b"p"})
    second = registry.record("churn", 2, "validation", {"evidence.json": b"{2}"})
    assert registry.records("churn", 2, "validation") == [first, second]
    assert registry.read_record("churn", 2, "validation", first, "p.png") == b"p"
    assert registry.records("churn", 1, "validation") == []
    with pytest.raises(RegistryError, match="no validation record nope"):
        registry.read_record("churn", 2, "validation", "nope", "p.png")

    # compare-and-swap from 3 processes: one unbroken chain in the history, nothing lost
    registry.set_alias("churn", "champion", 1, expected=None, by="ci", reason="first")
    with pytest.raises(AliasConflict, match="points to v1, not v2 as expected"):
        registry.set_alias("churn", "champion", 3, expected=2)
    with mp.get_context("spawn").Pool(3) as pool:
        assert pool.starmap(_move_forward, [(url, cache, 3)] * 3) == [3] * 3
    history = registry.alias_history("churn", "champion")
    assert [m.seq for m in history] == list(range(1, 11))
    assert all(b.previous == a.version for a, b in itertools.pairwise(history))
    assert history[0].by == "ci" and history[0].reason == "first"
    head = registry.aliases("churn")["champion"]
    assert head == history[-1].version
    # MLflow's own alias follows, for its UI and other clients
    assert int(registry.client.get_model_version_by_alias("churn", "champion").version) == head
    registry.remove_alias("churn", "champion", expected=head, reason="retired")
    assert registry.aliases("churn") == {}
    assert registry.client.get_model_version("churn", "1").tags[COMPLETE] == "true"
    assert "churn" in registry.models() and "churn.aliases" not in registry.models()


def test_mlflow_options_that_would_do_nothing_are_refused() -> None:
    with pytest.raises(ValueError, match="backend mlflow: storage_options and secret"):
        ModelRegistry(backend="mlflow", root_uri="http://x", secret="s")
    with pytest.raises(ValueError, match="cache_dir is for backend mlflow"):
        ModelRegistry(root_uri="data/registry", cache_dir="/tmp/x")
