"""What a version needs to be served, written beside it at registration: its serving contract
(deployments/contract.py) and a held-out sample with its offline scores (the smoke test)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from deployments.contract import OnDemand, ServingContract
from tasks.specs.dataset_spec import DatasetSpec

HOLDOUT_ROWS = 200
SCORE = "score"


def serving_contract(
    spec: DatasetSpec,
    service: str,
    features: list[str],
    stored_views: dict[str, list[str]],
    frame: pd.DataFrame,
    fingerprint: str,
    project: str,
) -> ServingContract:
    """The contract of a model trained on `frame` (its training rows): features missing there
    stay nullable when served; the rest must be given."""
    label_table = spec.tables[spec.label.table]
    keys = {
        k: "INT64" if label_table.columns[k].dtype == "int64" else "STRING"
        for k in spec.service_keys(service)
    }
    fields = spec.service_request_fields(service)
    request = spec.request.fields if spec.request else {}
    on_demand = [
        OnDemand(spec.on_demand[n].transform, dict(spec.on_demand[n].outputs))
        for n in spec.service_on_demand(service)
    ]
    return ServingContract(
        features=list(features),
        join_keys=keys,
        fingerprint=fingerprint,
        project=project,
        views={v: list(names) for v, names in stored_views.items()},
        request_fields={f: request[f] for f in fields},
        on_demand=on_demand,
        nullable=[f for f in features if frame[f].isna().any()],
    )


def holdout_sample(
    test: pd.DataFrame, features: list[str], scores: np.ndarray, rows: int, seed: int
) -> bytes:
    """Up to `rows` test rows (features and the version's calibrated offline score) as
    Parquet: the rows a rollout serves and compares before any user traffic."""
    sample = test[features].assign(**{SCORE: scores})
    sample = sample.sample(min(rows, len(sample)), random_state=seed)
    buffer = io.BytesIO()
    sample.reset_index(drop=True).to_parquet(buffer, index=False)
    return buffer.getvalue()
