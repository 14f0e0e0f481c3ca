"""Monitoring results as Prometheus gauges, pushed to a pushgateway (job mlops_monitoring,
grouped by model, so each run replaces its model's previous values)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from tasks.monitoring.check import ModelCheck
from tasks.monitoring.prometheus import MONITORING_JOB


def gauges(check: ModelCheck, auc_floor: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    stream = ["model", "version", "role"]
    drift = Gauge("mlops_drift_detected", "1 if the last window drifted", stream, registry=registry)
    rows = Gauge(
        "mlops_monitoring_window_rows", "Rows of the last window", stream, registry=registry
    )
    p_value = Gauge(
        "mlops_drift_p_value",
        "Feature p-value, last window",
        [*stream, "feature"],
        registry=registry,
    )
    distance = Gauge(
        "mlops_drift_distance", "Feature KS/Chi2 distance", [*stream, "feature"], registry=registry
    )
    score_p = Gauge("mlops_prediction_drift_p_value", "Score KS p-value", stream, registry=registry)
    last = {(c["version"], c["role"]): c for c in check.checks}  # the newest window per stream
    for (version, role), c in last.items():
        labels = [check.model, str(version), role]
        drift.labels(*labels).set(1.0 if c["drift"] else 0.0)
        rows.labels(*labels).set(c["rows"])
        score_p.labels(*labels).set(c["score"]["p_value"])
        for f in c["features"]:
            p_value.labels(*labels, f["feature"]).set(f["p_value"])
            distance.labels(*labels, f["feature"]).set(f["distance"])
    version_labels = ["model", "version", "role"]
    auc = Gauge("mlops_live_auc", "AUC, last N labelled", version_labels, registry=registry)
    brier = Gauge("mlops_live_brier", "Brier, last N labelled", version_labels, registry=registry)
    ece = Gauge("mlops_live_ece", "ECE, last N labelled", version_labels, registry=registry)
    labelled = Gauge("mlops_labelled_rows", "Labelled rows", version_labels, registry=registry)
    for a in check.accuracy:
        labels = [check.model, str(a.version), a.role]
        labelled.labels(*labels).set(a.labelled)
        if a.enough:
            auc.labels(*labels).set(a.auc)
            brier.labels(*labels).set(a.brier)
            ece.labels(*labels).set(a.ece)
    Gauge("mlops_live_auc_floor", "Live AUC floor", ["model"], registry=registry).labels(
        check.model
    ).set(auc_floor)
    Gauge(
        "mlops_monitoring_last_success_timestamp_seconds",
        "When monitoring last finished",
        ["model"],
        registry=registry,
    ).labels(check.model).set(time.time())
    return registry


def push(url: str, check: ModelCheck, auc_floor: float) -> None:
    push_to_gateway(
        url,
        job=MONITORING_JOB,
        grouping_key={"model": check.model},
        registry=gauges(check, auc_floor),
    )
