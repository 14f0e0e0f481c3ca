"""data_prep's report as artifact content: rows per table and rule, the per-feature summary."""

from __future__ import annotations

from tasks.data.preprocess import PrepReport


def prep_rows(report: PrepReport) -> list[dict[str, object]]:
    return [
        {
            "table": name,
            "files": t.files,
            "rows_in": t.rows_in,
            "rows_rejected": sum(t.rejected.values()),
            "rows_out": t.rows_out,
            "rejected_by_rule": ", ".join(f"{k}: {v}" for k, v in sorted(t.rejected.items()))
            or "none",
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
