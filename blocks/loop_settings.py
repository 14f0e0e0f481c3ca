"""Which saved blocks the automated loop (monitoring and retraining) acts on.

Runs started by an automation take their parameters from the event, so the blocks they use
come from one Prefect Variable, `mlops_loop`, set once per workspace (UI: Variables; CLI:
`prefect variable set mlops_loop '{"registry_block": "prod-registry", ...}' --overwrite`).
A parameter given to a run wins over the variable; neither: the embedded default.
"""

from __future__ import annotations

from prefect.variables import Variable
from pydantic import BaseModel, ConfigDict

VARIABLE = "mlops_loop"


class LoopSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry_block: str | None = None
    target_block: str | None = None
    feature_repo_block: str | None = None
    dask_cluster_block: str | None = None
    data_source_block: str | None = None
    validation_policy_block: str | None = None
    rollout_policy_block: str | None = None
    monitoring_policy_block: str | None = None


def loop_settings() -> LoopSettings:
    """The workspace's `mlops_loop` variable (empty settings when it is not set)."""
    value = Variable.get(VARIABLE, default=None)
    if value is None:
        return LoopSettings()
    try:
        return LoopSettings.model_validate(value)
    except ValueError as exc:
        raise ValueError(f"Prefect variable '{VARIABLE}': {exc}") from exc
