"""Prefect blocks for every connection and policy; `prefect block register -m blocks`.

Each block has an embedded default, used when no block of that name is saved.
"""

from __future__ import annotations

from typing import TypeVar

from prefect.blocks.core import Block

from blocks.dask_cluster import DaskCluster
from blocks.data_quality_policy import DataQualityPolicy
from blocks.data_source import DataSource
from blocks.dataset_spec import DatasetSpecBlock, resolve_dataset
from blocks.feature_repo import FeatureRepo
from blocks.loop_settings import LoopSettings, loop_settings
from blocks.model_registry import ModelRegistry
from blocks.monitoring_policy import MonitoringPolicy
from blocks.rollout_policy import RolloutPolicy
from blocks.serving_target import ServingTarget
from blocks.validation_policy import ValidationPolicy

B = TypeVar("B", bound=Block)

__all__ = [
    "DaskCluster",
    "DataQualityPolicy",
    "DataSource",
    "DatasetSpecBlock",
    "FeatureRepo",
    "LoopSettings",
    "ModelRegistry",
    "MonitoringPolicy",
    "RolloutPolicy",
    "ServingTarget",
    "ValidationPolicy",
    "load_or_default",
    "loop_settings",
    "resolve_dataset",
]


def load_or_default(cls: type[B], name: str | None, default: B) -> B:
    """The saved block `name`, or `default` when no name is given."""
    if not name:
        return default
    return cls.load(name)  # type: ignore[return-value]
