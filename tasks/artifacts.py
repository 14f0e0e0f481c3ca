"""Prefect artifacts that make each run's evidence readable in the UI and through the API."""

from __future__ import annotations

import re

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.feature_store.store import SkewReport
from tasks.data.preprocess import PrepReport


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def prep_rows(report: PrepReport) -> list[dict[str, object]]:
    return [
        {
            "table": name,
            "files": t.files,
            "rows_in": t.rows_in,
            "rows_rejected": sum(t.rejected.values()),
            "rows_out": t.rows_out,
            "rejected_by_rule": ", ".join(f"{k}: {v}" for k, v in sorted(t.rejected.items()))
            or "-",
        }
        for name, t in report.tables.items()
    ]


def prep_markdown(dataset: str, report: PrepReport, output_uri: str) -> str:
    lines = [
        f"# data_prep: {dataset}",
        "",
        f"Rows in: **{report.rows_in:,}**, rejected: **{report.rows_rejected:,}** "
        f"(quarantined with their reasons), feature tables written to `{output_uri}`.",
        "",
    ]
    for key, aligned in report.copartitioned.items():
        how = "already partitioned by key: no shuffle" if aligned else "shuffled by key"
        lines.append(f"- `{key}`: {how}")
    lines.append("")
    for name, stats in report.features.items():
        lines += [f"## {name}", "", stats.to_markdown(index=False, floatfmt=".4g"), ""]
    return "\n".join(lines)


@task(name="report-data-prep")
def report_data_prep(dataset: str, report: PrepReport, output_uri: str) -> None:
    key = artifact_key("data-prep", dataset)
    create_table_artifact(
        table=prep_rows(report), key=key, description=f"Rows per table: {dataset}"
    )
    create_markdown_artifact(
        markdown=prep_markdown(dataset, report, output_uri),
        key=f"{key}-features",
        description=f"Per-feature summary: {dataset}",
    )


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


@task(name="report-skew")
def report_skew(dataset: str, reports: dict[str, SkewReport]) -> None:
    create_table_artifact(
        table=skew_rows(reports),
        key=artifact_key("feature-skew", dataset),
        description=f"Online vs offline features as of now, per feature: {dataset}",
    )
