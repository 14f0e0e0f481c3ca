"""How served models are watched, and where the results are pushed for Prometheus."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from tasks.monitoring.policy import MonitoringPolicy as Policy


class MonitoringPolicy(Block):
    """Drift windows and thresholds, live-accuracy floor, re-emission of unanswered episodes,
    and the Prometheus pushgateway the results go to."""

    _block_type_name = "MLOps Monitoring Policy"
    _description = (
        "Window rows and minimum, drift p-value, live AUC floor over the last N labelled "
        "predictions, label look-back, when an unanswered episode is emitted again, and the "
        "pushgateway URL (empty: no push)."
    )

    policy: Policy = Field(default_factory=Policy)
    pushgateway_url: str = Field(
        default="", description="e.g. http://127.0.0.1:9091; empty: results are not pushed."
    )
