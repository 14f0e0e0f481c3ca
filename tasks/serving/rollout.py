"""Serve before promote: readiness, a smoke test on the version's own held-out rows, then canary
(or shadow) analysis of the live window against the champion, under a RolloutPolicy.

Plain functions over what the serving side writes: the request and labels logs
(deployments/request_log.py) and the ingress's access log (deployments/nginx.py). The
rollout's own probes carry request ids starting with `rollout-` and are left out of the
analysis (and of monitoring).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from deployments.contract import HOLDOUT
from deployments.request_log import LABELS, REQUESTS, read_log
from tasks.serving.contract import SCORE
from tasks.validation.metrics import binary_metrics

PROBE = "rollout-"
Post = Callable[[str, Any], tuple[int, Any]]  # (url, json body) -> (status, answer)


class RolloutPolicy(BaseModel):
    """When a challenger may replace the champion."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["canary", "shadow"] = "canary"
    canary_percent: int = Field(default=10, ge=1, le=99)
    window_requests: int = Field(default=200, ge=1, description="Challenger predictions to see.")
    window_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=3000,
        description="Then decide on what was seen (at least min_requests).",
    )
    min_requests: int = Field(default=50, ge=1)
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="Challenger 5xx share.")
    max_p99_ms: float = Field(default=100.0, gt=0, description="Challenger latency budget.")
    max_score_shift: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Largest KS distance between the challenger's and the champion's scores on "
        "the window's traffic...",
    )
    score_shift_alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="...counted only when the KS test's p-value is below this: on a small "
        "window, two like models' scores differ by chance.",
    )
    min_labels: int = Field(default=200, ge=1, description="Labelled predictions per side.")
    max_auc_drop: float = Field(default=0.02, ge=0, le=1)
    smoke_rows: int = Field(
        default=200, ge=1, le=200, description="Of the 200 held-out rows stored with a version."
    )
    smoke_tolerance: float = Field(default=1e-9, ge=0)


class RolloutRejected(RuntimeError):
    """A challenger that must not be promoted; `reasons` say why."""

    def __init__(self, stage: str, reasons: list[str], evidence: dict[str, Any]) -> None:
        super().__init__(f"{stage}: {'; '.join(reasons)}")
        self.stage = stage
        self.reasons = reasons
        self.evidence = evidence


# -- before any user traffic ------------------------------------------------------------------


def holdout_rows(model_dir: str | Path, rows: int) -> pd.DataFrame:
    frame = pd.read_parquet(Path(model_dir) / HOLDOUT)
    return frame.head(rows)


def features_request(frame: pd.DataFrame, features: list[str], puid: str) -> dict[str, Any]:
    values = frame[features].astype("float64").to_numpy()
    rows = [[None if math.isnan(v) else float(v) for v in row] for row in values]
    return {"meta": {"puid": puid}, "data": {"names": features, "ndarray": rows}}


def readiness(url: str, holdout: pd.DataFrame, features: list[str], post: Post) -> dict[str, Any]:
    """Health, then one real prediction; RolloutRejected if either fails."""
    status, answer = post(f"{url}/health/status", None)
    if status != 200:
        raise RolloutRejected("readiness", [f"health: HTTP {status}: {answer}"], {})
    status, answer = post(
        f"{url}/api/v1.0/predictions",
        features_request(holdout.head(1), features, f"{PROBE}ready"),
    )
    score = _scores(answer)[0] if status == 200 else None
    if score is None or not 0.0 <= score <= 1.0:
        raise RolloutRejected("readiness", [f"prediction: HTTP {status}: {answer}"], {})
    return {"health": "ok", "prediction": score}


def smoke_test(
    url: str,
    holdout: pd.DataFrame,
    features: list[str],
    post: Post,
    tolerance: float,
    batch: int = 100,
) -> dict[str, Any]:
    """Serve the held-out rows and compare with the version's offline scores, row by row."""
    served: list[float] = []
    for start in range(0, len(holdout), batch):
        part = holdout.iloc[start : start + batch]
        body = features_request(part, features, f"{PROBE}smoke-{start}")
        status, answer = post(f"{url}/api/v1.0/predictions", body)
        if status != 200:
            raise RolloutRejected("smoke", [f"rows {start}+: HTTP {status}: {answer}"], {})
        served.extend(_scores(answer))
    diff = np.abs(np.asarray(served) - holdout[SCORE].to_numpy())
    evidence = {
        "rows": len(served),
        "max_abs_diff": float(diff.max()),
        "tolerance": tolerance,
        "rows_over_tolerance": int((diff > tolerance).sum()),
    }
    if evidence["rows_over_tolerance"]:
        worst = int(diff.argmax())
        raise RolloutRejected(
            "smoke",
            [
                f"{evidence['rows_over_tolerance']} of {len(served)} held-out rows differ from "
                f"the offline scores by more than {tolerance:g} (worst: row {worst}, "
                f"{diff[worst]:.3g})"
            ],
            evidence,
        )
    return evidence


def _scores(answer: Any) -> list[float]:
    values = answer["data"]["ndarray"]
    return [float(v[0] if isinstance(v, list) else v) for v in values]


# -- the live window --------------------------------------------------------------------------


@dataclass
class SideStats:
    """One predictor's share of the window."""

    version: int
    role: str
    predictions: int = 0
    requests: int = 0  # at the ingress
    errors: int = 0  # 5xx or no answer, at the ingress
    p50_ms: float | None = None
    p99_ms: float | None = None
    labelled: int = 0
    live_auc: float | None = None
    scores: list[float] = field(default_factory=list, repr=False)


def window_records(log_dir: str | Path, since: str) -> list[dict[str, Any]]:
    """Predictions logged since `since`, without the rollout's own probes."""
    read = read_log(Path(log_dir) / REQUESTS, REQUESTS, since)
    return [r for r in read.records if not str(r.get("request_id", "")).startswith(PROBE)]


def wait_for_window(
    log_dir: str | Path, role: str, since: str, policy: RolloutPolicy, alive: Callable[[], bool]
) -> int:
    """Wait until the challenger (`role`) has made `window_requests` predictions since `since`,
    the window times out, or `alive()` turns false; the predictions seen."""
    deadline = time.monotonic() + policy.window_timeout_s
    seen = 0
    while time.monotonic() < deadline and alive():
        seen = sum(r.get("role") == role for r in window_records(log_dir, since))
        if seen >= policy.window_requests:
            break
        time.sleep(1.0)
    return seen


def ingress_lines(access_log: str | Path, since_epoch: float) -> list[dict[str, Any]]:
    path = Path(access_log)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if float(entry.get("msec", 0)) >= since_epoch and "predictions" in entry.get("uri", ""):
            out.append(entry)
    return out


def side_stats(
    records: Sequence[dict[str, Any]],
    labels: dict[tuple[str, int], float],
    ingress: Sequence[dict[str, Any]],
    version: int,
    role: str,
    address: str | None,
) -> SideStats:
    """What one predictor (by version and role, and its address at the ingress) did."""
    mine = [r for r in records if r.get("version") == version and r.get("role") == role]
    side = SideStats(version=version, role=role, predictions=len(mine))
    side.scores = [float(r["score"]) for r in mine]
    by_request: dict[str, float] = {str(r["request_id"]): float(r["latency_ms"]) for r in mine}
    if by_request:
        latency = np.fromiter(by_request.values(), dtype="float64")
        side.p50_ms, side.p99_ms = (float(np.percentile(latency, q)) for q in (50, 99))
    if address:
        for entry in ingress:
            tried = [a.strip() for a in str(entry.get("upstream", "")).split(",")]
            codes = [c.strip() for c in str(entry.get("upstream_status", "")).split(",")]
            for addr, code in zip(tried, codes, strict=False):
                if addr == address:
                    side.requests += 1
                    side.errors += not code.isdigit() or int(code) >= 500
    pairs = [
        (labels[k], s)
        for r, s in zip(mine, side.scores, strict=True)
        if (k := (str(r["request_id"]), int(r["row"]))) in labels
    ]
    side.labelled = len(pairs)
    if pairs and len({y for y, _ in pairs}) == 2:
        y, p = (np.asarray(v, dtype="float64") for v in zip(*pairs, strict=True))
        side.live_auc = float(binary_metrics(y, p, "")["auc"])
    return side


def labels_by_request(log_dir: str | Path, since: str) -> dict[tuple[str, int], float]:
    read = read_log(Path(log_dir) / LABELS, LABELS, since)
    return {(str(r["request_id"]), int(r["row"])): float(r["label"]) for r in read.records}


def score_shift(challenger: SideStats, champion: SideStats) -> tuple[float, float] | None:
    """KS distance between the two sides' scores and its p-value (None without scores)."""
    if not challenger.scores or not champion.scores:
        return None
    test = stats.ks_2samp(challenger.scores, champion.scores)
    return float(test.statistic), float(test.pvalue)


def analyse(
    policy: RolloutPolicy, challenger: SideStats, champion: SideStats, challenger_alive: bool
) -> tuple[list[str], dict[str, Any]]:
    """The reasons not to promote (none: promote) and the evidence behind them."""
    reasons: list[str] = []
    shift = score_shift(challenger, champion)
    error_rate = challenger.errors / challenger.requests if challenger.requests else 0.0
    if not challenger_alive:
        reasons.append("the challenger's process died during the window")
    if challenger.predictions < policy.min_requests:
        reasons.append(
            f"insufficient traffic: {challenger.predictions} challenger predictions "
            f"(policy minimum {policy.min_requests})"
        )
    if error_rate > policy.max_error_rate:
        reasons.append(
            f"error rate {error_rate:.2%} ({challenger.errors}/{challenger.requests}) > "
            f"{policy.max_error_rate:.2%}"
        )
    if challenger.p99_ms is not None and challenger.p99_ms > policy.max_p99_ms:
        reasons.append(f"latency p99 {challenger.p99_ms:.2f} ms > budget {policy.max_p99_ms} ms")
    if (
        shift is not None
        and shift[0] > policy.max_score_shift
        and shift[1] < policy.score_shift_alpha
    ):
        reasons.append(
            f"scores shifted from the champion's: KS {shift[0]:.3f} > {policy.max_score_shift} "
            f"(p = {shift[1]:.2g})"
        )
    if (
        challenger.labelled >= policy.min_labels
        and champion.labelled >= policy.min_labels
        and challenger.live_auc is not None
        and champion.live_auc is not None
        and challenger.live_auc < champion.live_auc - policy.max_auc_drop
    ):
        reasons.append(
            f"live AUC {challenger.live_auc:.4f} < champion's {champion.live_auc:.4f} - "
            f"{policy.max_auc_drop}"
        )
    evidence = {
        "challenger": _side(challenger),
        "champion": _side(champion),
        "error_rate": error_rate,
        "score_ks": shift[0] if shift else None,
        "score_ks_p": shift[1] if shift else None,
        "policy": policy.model_dump(),
    }
    return reasons, evidence


def _side(side: SideStats) -> dict[str, Any]:
    out = asdict(side)
    out.pop("scores")
    scores = np.asarray(side.scores)
    out["score_mean"] = float(scores.mean()) if len(scores) else None
    return out
