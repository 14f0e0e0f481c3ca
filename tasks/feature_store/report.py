"""The skew check's result as artifact content: one row per service and feature."""

from __future__ import annotations

from tasks.feature_store.skew import SkewReport


def skew_rows(reports: dict[str, SkewReport]) -> list[dict[str, object]]:
    return [
        {
            "feature_service": service,
            "feature": feature,
            "entities": r.entities,
            "mismatch_rate": rate,
        }
        for service, r in reports.items()
        for feature, rate in sorted(r.mismatch_rate.items())
    ]
