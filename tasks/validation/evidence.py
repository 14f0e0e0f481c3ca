"""The validation evidence: the record kept beside the version, and its artifact content
(gates, metrics, segments, explanations, plots)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pandas as pd
from pydantic import BaseModel

from tasks.artifacts import markdown_table
from tasks.registry.store import Registry
from tasks.validation.behaviour import InvarianceResult, MonotonicResult
from tasks.validation.explain import Explanation, importance_moves
from tasks.validation.gates import DataEvidence, GatePolicy, GateResult
from tasks.validation.metrics import Evaluation


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""  # the UI's tables render a lone "-" as a list bullet
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _interval(gate: dict[str, Any]) -> str:
    if gate.get("low") is None:
        return ""
    return f"[{_num(gate['low'])}, {_num(gate['high'])}] {gate['confidence']:.0%} {gate['method']}"


def _result(gate: dict[str, Any]) -> str:
    if not gate.get("gated", True):
        return "not gated"
    return "pass" if gate["passed"] else "FAIL"


def gate_rows(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """Failures first, reported-only rows last; regressions with their interval."""
    gates = sorted(evidence["gates"], key=lambda g: (g["passed"], not g.get("gated", True)))
    return [
        {
            "gate": g["gate"],
            "result": _result(g),
            "value": _num(g["value"]),
            "interval": _interval(g),
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


def evidence_markdown(
    evidence: dict[str, Any], plots: dict[str, bytes], stored_at: str, pending_approval: bool
) -> str:
    """The evidence for the UI; the plots embedded as data:image/png;base64 URIs."""
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
        f"(training data to {evidence['data']['trained_to']}, then the label's "
        f"{evidence['data'].get('horizon_days', 0)}-day horizon; "
        f"{evidence['data'].get('left_out_open_outcome', 0):,} rows with an open outcome "
        "left out).",
        "",
        "## Gates",
        *markdown_table(gate_rows(evidence)),
        "",
        "## Metrics",
        *markdown_table(metric_rows(evidence)),
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
            *markdown_table(
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
    lines += ["## Plots", ""]
    for file in sorted(plots):
        uri = "data:image/png;base64," + base64.b64encode(plots[file]).decode()
        lines += [f"**{file.removesuffix('.png')}**", "", f"![{file}]({uri})", ""]
    lines.append(f"Evidence, importances and plots are kept in the registry: `{stored_at}`")
    return "\n".join(lines)


def build_evidence(
    name: str,
    policy: GatePolicy,
    data: DataEvidence,
    evaluations: list[Evaluation],
    monotonic: list[MonotonicResult],
    invariance: list[InvarianceResult],
    gates: list[GateResult],
    explanation: Explanation,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Everything the decision rests on, as JSON-able data (candidate first in `evaluations`),
    with the flow run that gathered it."""
    ranked = list(explanation.importances.values())  # candidate first, then the champion
    moves = importance_moves(ranked[0], ranked[1]) if len(ranked) == 2 else []
    return {
        "model": name,
        "candidate": evaluations[0].version,
        "champion": evaluations[1].version if len(evaluations) > 1 else None,
        "policy": policy.model_dump(mode="json"),
        "data": data.model_dump(mode="json"),
        "metrics": {e.version: e.metrics for e in evaluations},
        "segments": {e.version: [s.model_dump() for s in e.segments] for e in evaluations},
        "behaviour": {
            "monotonic": [m.model_dump() for m in monotonic],
            "invariance": [i.model_dump() for i in invariance],
        },
        "gates": [g.model_dump() for g in gates],
        "importance_moves": [m.model_dump() for m in moves],
        "glass_box": explanation.glass_box.model_dump(),
        "explain_seconds": explanation.seconds,
        "local_explanations": [e.model_dump() for e in explanation.local],
        "partial_dependence": explanation.dependence,
        "flow_run_id": flow_run_id,
    }


class Verdict(BaseModel):
    """What the decision rests on, from the evidence (freshly built, or read back)."""

    model: str
    version: int
    champion: int | None
    policy: GatePolicy
    failing: list[str]
    metrics: dict[str, float]
    record: str  # the stamp of the validation record holding the evidence


def verdict(evidence: dict[str, Any], stamp: str) -> Verdict:
    version = int(evidence["candidate"])
    metrics = evidence["metrics"]  # keyed by version: an int, or a str once read from JSON
    return Verdict(
        model=evidence["model"],
        version=version,
        champion=evidence["champion"],
        policy=GatePolicy.model_validate(evidence["policy"]),
        failing=[g["gate"] for g in evidence["gates"] if not g["passed"]],
        metrics=metrics[version] if version in metrics else metrics[str(version)],
        record=stamp,
    )


def run_evidence(
    registry: Registry, name: str, flow_run_id: str, candidate: int | None
) -> tuple[str, dict[str, Any]] | None:
    """The evidence flow run `flow_run_id` recorded for model `name` (a run started again after
    its approval was asked, or retried): its record's stamp and content, None if none. Looks at
    `candidate` when given, else at every version, newest first (a newer version may have been
    registered since that run chose the newest)."""
    versions = [candidate] if candidate else [v.version for v in registry.versions(name)][::-1]
    for version in versions:
        for stamp in reversed(registry.records(name, version, "validation")):
            raw = registry.read_record(name, version, "validation", stamp, "evidence.json")
            evidence: dict[str, Any] = json.loads(raw)
            if evidence.get("flow_run_id") == flow_run_id:
                return stamp, evidence
    return None


def evidence_files(evidence: dict[str, Any], explanation: Explanation) -> dict[str, bytes]:
    """The files of the registry's validation record."""
    return {
        "evidence.json": json.dumps(evidence, indent=2, default=str).encode(),
        "importances.json": json.dumps(explanation.importances, indent=2).encode(),
        **explanation.plots,
    }


def decision_outcome(
    decision: str, failing: list[str], stamp: str, approval: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "decision": decision,
        "failed_gates": failing,
        "evidence": stamp,
        "approval": approval,
        "decided_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }


def decision_markdown(name: str, version: int, outcome: dict[str, Any]) -> str:
    lines = [f"# {name} v{version}: {outcome['decision']}", ""]
    if outcome["failed_gates"]:
        lines.append("Failed: " + ", ".join(f"`{g}`" for g in outcome["failed_gates"]))
    if outcome["approval"]:
        lines.append(f"Approval: {outcome['approval']}")
    lines.append(f"Evidence: registry record `validation/{outcome['evidence']}`.")
    return "\n".join(lines)
