"""The deployment flow's decision as markdown (a Prefect artifact)."""

from __future__ import annotations

from typing import Any

from tasks.artifacts import markdown_table


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def rollout_markdown(outcome: dict[str, Any]) -> str:
    name, version = outcome["model"], outcome["version"]
    lines = [
        f"# Rollout of {name} v{version}: {outcome['decision']}",
        "",
        f"- champion before: {_fmt(outcome.get('champion_before')) or 'none'}; "
        f"champion after: {_fmt(outcome.get('champion_after')) or 'none'}",
        f"- action: {outcome.get('action', '')} by {outcome.get('actor', '')}; mode: "
        f"{outcome.get('mode', '')}; last stage: {outcome.get('stage', '')}",
        f"- started {outcome.get('started_at', '')}, decided {outcome.get('decided_at', '')}",
    ]
    if outcome.get("reason"):
        lines.append(f"- reason: {outcome['reason']}")
    reasons = outcome.get("reasons") or []
    lines += ["", "## Why", ""]
    lines += [f"- {r}" for r in reasons] if reasons else ["- every check passed"]
    smoke = (outcome.get("checks") or {}).get("smoke")
    if smoke:
        lines += [
            "",
            "## Smoke test (held-out rows served vs offline scores)",
            "",
            *markdown_table([{k: _fmt(v) for k, v in smoke.items()}]),
        ]
    window = outcome.get("window")
    if window:
        keys = [
            "predictions",
            "requests",
            "errors",
            "p50_ms",
            "p99_ms",
            "score_mean",
            "labelled",
            "live_auc",
        ]
        rows = [
            {
                "side": f"{side} v{window[side]['version']} ({window[side]['role']})",
                **{k: _fmt(window[side].get(k)) for k in keys},
            }
            for side in ("challenger", "champion")
        ]
        lines += [
            "",
            "## Live window",
            "",
            *markdown_table(rows),
            "",
            f"Error rate {_fmt(window.get('error_rate'))}, score KS distance "
            f"{_fmt(window.get('score_ks'))} (p = {_fmt(window.get('score_ks_p'))}).",
        ]
    return "\n".join(lines)
