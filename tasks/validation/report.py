"""The validation evidence as Prefect artifacts: gates, metrics, segments, explanations, plots."""

from __future__ import annotations

import math
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from tasks.artifacts import artifact_key
from tasks.registry.store import Registry


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def gate_rows(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    gates = sorted(evidence["gates"], key=lambda g: g["passed"])  # failures first
    return [
        {
            "gate": g["gate"],
            "result": "pass" if g["passed"] else "FAIL",
            "value": _num(g["value"]),
            "threshold": _num(g["threshold"]),
            "detail": g["detail"],
        }
        for g in gates
    ]


def metric_rows(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric (overall and per segment), one column per model."""
    labels = {evidence["candidate"]: "candidate", evidence["champion"]: "champion"}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for version, values in evidence["metrics"].items():
        for metric, v in values.items():
            row = rows.setdefault(("all", metric), {"segment": "all", "metric": metric})
            row[f"{labels[version]} v{version}"] = _num(v)
    for version, segments in evidence["segments"].items():
        for seg in segments:
            for metric, v in (seg["metrics"] or {}).items():
                key = (seg["segment"], metric)
                row = rows.setdefault(key, {"segment": seg["segment"], "metric": metric})
                row[f"{labels[version]} v{version}"] = _num(v)
                row["rows"] = seg["rows"]
    return list(rows.values())


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(none)"]
    columns = list(dict.fromkeys(c for r in rows for c in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return lines


def evidence_markdown(
    evidence: dict[str, Any], plot_uris: dict[str, str], pending_approval: bool
) -> str:
    failing = [g["gate"] for g in evidence["gates"] if not g["passed"]]
    name, version, champion = evidence["model"], evidence["candidate"], evidence["champion"]
    if failing:
        verdict = f"**REJECTED**: failed gates {', '.join(f'`{g}`' for g in failing)}"
    elif pending_approval:
        verdict = "**All gates passed**: waiting for a reviewer's approval"
    else:
        verdict = "**All gates passed**: moves to `challenger`"
    against = f"champion v{champion}" if champion else "no champion (absolute gates only)"
    box = evidence["glass_box"]
    lines = [
        f"# Validation of {name} v{version} against {against}",
        "",
        verdict,
        "",
        f"Test set: {evidence['data']['test_rows']:,} rows from {evidence['data']['test_from']} "
        f"(training data to {evidence['data']['trained_to']}).",
        "",
        "## Gates",
        *_table(gate_rows(evidence)),
        "",
        "## Metrics",
        *_table(metric_rows(evidence)),
        "",
        "## Explanations (InterpretML)",
        f"Glass-box reference (EBM on {box['rows']:,} training rows): test AUC "
        f"{_num(box['test_auc'])}, fitted in {box['fit_seconds']:.1f} s; all explanations took "
        f"{evidence['explain_seconds']:.1f} s.",
        "",
    ]
    candidate_auc = evidence["metrics"][version]["auc"]
    if box["test_auc"] > candidate_auc:
        lines += [
            f"The glass box scores higher than the candidate (AUC {_num(candidate_auc)}): "
            "an interpretable model may serve as well here.",
            "",
        ]
    if evidence["importance_moves"]:
        lines += [
            "Features whose importance share moved most (candidate vs champion, Morris mu*):",
            *_table(
                [
                    {
                        "feature": m["feature"],
                        "candidate": _num(m["candidate"]),
                        "champion": _num(m["champion"]),
                        "change": f"{m['change']:+.4f}",
                    }
                    for m in evidence["importance_moves"]
                ]
            ),
            "",
        ]
    lines += ["Plots:", *(f"- [{file}]({uri})" for file, uri in plot_uris.items())]
    return "\n".join(lines)


def publish_evidence(
    registry: Registry,
    evidence: dict[str, Any],
    stamp: str,
    plots: list[str],
    pending_approval: bool,
) -> None:
    """Markdown summary, gate and metric tables, and a link to each plot in the registry."""
    name, version = evidence["model"], evidence["candidate"]
    uris = {f: registry.record_uri(name, version, "validation", stamp, f) for f in plots}
    create_markdown_artifact(
        key=artifact_key("validation", name),
        markdown=evidence_markdown(evidence, uris, pending_approval),
        description=f"Validation evidence for {name} v{version}",
    )
    create_table_artifact(
        key=artifact_key("validation-gates", name),
        table=gate_rows(evidence),
        description=f"Gate results for {name} v{version}",
    )
    create_table_artifact(
        key=artifact_key("validation-metrics", name),
        table=metric_rows(evidence),
        description=f"Candidate and champion metrics for {name} v{version}",
    )
    for file, uri in uris.items():
        create_link_artifact(
            key=artifact_key("validation-plot", name, file.removesuffix(".png")),
            link=uri if "://" in uri else f"file://{uri}",
            link_text=file,
            description=f"{file} for {name} v{version}",
        )


def publish_decision(name: str, version: int, outcome: dict[str, Any]) -> None:
    lines = [f"# {name} v{version}: {outcome['decision']}", ""]
    if outcome["failed_gates"]:
        lines.append("Failed: " + ", ".join(f"`{g}`" for g in outcome["failed_gates"]))
    if outcome["approval"]:
        lines.append(f"Approval: {outcome['approval']}")
    lines.append(f"Evidence: registry record `validation/{outcome['evidence']}`.")
    create_markdown_artifact(
        key=artifact_key("validation-decision", name),
        markdown="\n".join(lines),
        description=f"Validation decision for {name} v{version}",
    )
