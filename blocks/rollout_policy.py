"""The policy the deployment flow's canary or shadow analysis enforces."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from tasks.serving.rollout import RolloutPolicy as Policy


class RolloutPolicy(Block):
    """How a challenger is tried on live traffic, and what it must show to be promoted."""

    _block_type_name = "MLOps Rollout Policy"
    _description = (
        "Canary share or shadow, the window (requests or seconds), and the limits: error rate, "
        "latency p99, score shift against the champion, live AUC, smoke-test tolerance."
    )

    policy: Policy = Field(default_factory=Policy)
