"""Paired confidence intervals for a metric's regression, candidate vs champion on the same rows.

"Worse by" is oriented so that positive means the candidate is worse: champion - candidate for
AUC and PR-AUC, candidate - champion for log loss, Brier and ECE. Three methods:

- AUC: DeLong's analytic variance of the paired difference (normal interval).
- Log loss, Brier (means of a per-row loss): a normal interval on the per-row differences.
- PR-AUC, ECE: a paired Poisson bootstrap (both models on the same resampled rows; percentile
  interval). Each model is sorted once; a resample then costs O(rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
from scipy.stats import rankdata

from tasks.validation.metrics import (
    CALIBRATION_BINS,
    HIGHER_IS_BETTER,
    SCORE_EPS,
    calibration_bins,
)

Method = Literal["delong", "normal", "bootstrap"]
MEAN_METRICS = ("logloss", "brier")
RANKED_METRICS = ("auc", "pr_auc")
CHUNK_CELLS = 2_000_000  # resamples x rows per chunk: bounds the temporaries (~30 MB)

# Poisson(1) counts drawn by inverse CDF from 16-bit uniforms: about 10x faster than
# rng.poisson, and the table's mean and variance are 1 to within 1e-4.
_CDF = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(16)])
_POISSON = np.searchsorted(_CDF, (np.arange(2**16) + 0.5) / 2**16).astype(np.uint8)


@dataclass(frozen=True)
class Interval:
    worse: float  # the point estimate on all rows
    low: float
    high: float
    method: Method


def worse_by(metric: str, new: float | np.ndarray, old: float | np.ndarray) -> float | np.ndarray:
    return old - new if HIGHER_IS_BETTER[metric] else new - old


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _clip(scores: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(scores, dtype="float64"), SCORE_EPS, 1 - SCORE_EPS)


def delong(labels: np.ndarray, new: np.ndarray, old: np.ndarray, confidence: float) -> Interval:
    """Worse-by in AUC with DeLong's paired variance, from each row's placement values (the
    midrank formulation of Sun & Xu, 2014)."""
    pos = np.asarray(labels) > 0.5
    m, n = int(pos.sum()), int((~pos).sum())
    auc, v10, v01 = [], [], []
    for scores in (_clip(new), _clip(old)):
        tz = rankdata(scores)
        auc.append((tz[pos].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[pos] - rankdata(scores[pos])) / n)  # per positive: share of negatives below
        v01.append(1 - (tz[~pos] - rankdata(scores[~pos])) / m)  # per negative: positives above
    worse = auc[1] - auc[0]
    var = np.var(v10[1] - v10[0], ddof=1) / m + np.var(v01[1] - v01[0], ddof=1) / n
    half = _z(confidence) * math.sqrt(var)
    return Interval(worse, worse - half, worse + half, "delong")


def row_losses(metric: str, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-row log loss or squared error; their mean is the metric."""
    y, p = np.asarray(labels, dtype="float64"), _clip(scores)
    if metric == "logloss":
        return -(y * np.log(p) + (1 - y) * np.log1p(-p))
    return (p - y) ** 2


def paired_mean(
    metric: str, labels: np.ndarray, new: np.ndarray, old: np.ndarray, confidence: float
) -> Interval:
    """Worse-by in log loss or Brier: a normal interval on the mean per-row difference."""
    d = row_losses(metric, labels, new) - row_losses(metric, labels, old)
    worse = float(d.mean())
    half = _z(confidence) * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return Interval(worse, worse - half, worse + half, "normal")


@dataclass(frozen=True)
class _Prepared:
    """One model's rows sorted once. `layout`: the row indices, positives then negatives, each in
    descending score order; bootstrap weights are laid out the same way. For each positive: how
    many positives and negatives rank at or above the end of its tie group, and negatives above
    its start."""

    layout: np.ndarray
    positives: int
    pos_to_end: np.ndarray
    neg_to_end: np.ndarray
    neg_to_start: np.ndarray
    means: np.ndarray  # per row in `layout`: log loss, Brier, ECE's signed error per bin (F order)


def _prepare(labels: np.ndarray, scores: np.ndarray) -> _Prepared:
    y, p = np.asarray(labels) > 0.5, _clip(scores)
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    first = np.r_[True, ps[1:] != ps[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(ps)]
    group = (np.cumsum(first) - 1)[ys]
    cum_pos = np.r_[0, np.cumsum(ys)]
    cum_neg = np.r_[0, np.cumsum(~ys)]
    layout = np.r_[order[ys], order[~ys]]
    errors = np.zeros((len(p), CALIBRATION_BINS))
    errors[np.arange(len(p)), calibration_bins(p)] = p - y
    means = np.column_stack([row_losses("logloss", y, p), row_losses("brier", y, p), errors])
    return _Prepared(
        layout,
        int(ys.sum()),
        cum_pos[ends[group]],
        cum_neg[ends[group]],
        cum_neg[starts[group]],
        np.asfortranarray(means[layout]),  # columns used one at a time
    )


def _weighted(
    model: _Prepared, weights: np.ndarray, wanted: Sequence[str]
) -> dict[str, np.ndarray]:
    """Each wanted metric under each row of integer `weights` (resamples x rows in the model's
    layout): cumulative weights of positives and of negatives replace the sort per resample."""
    out: dict[str, np.ndarray] = {}
    if any(m in RANKED_METRICS for m in wanted):
        wp, wn = weights[:, : model.positives], weights[:, model.positives :]
        cp = np.zeros((len(weights), wp.shape[1] + 1), dtype="int32")
        cn = np.zeros((len(weights), wn.shape[1] + 1), dtype="int32")
        np.cumsum(wp, axis=1, dtype="int32", out=cp[:, 1:])
        np.cumsum(wn, axis=1, dtype="int32", out=cn[:, 1:])
        positives, negatives = cp[:, -1], cn[:, -1]
        tp, fp = np.take(cp, model.pos_to_end, 1), np.take(cn, model.neg_to_end, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if "auc" in wanted:  # negatives below each positive, ties counted half
                below = negatives[:, None] - 0.5 * (fp + np.take(cn, model.neg_to_start, 1))
                out["auc"] = (wp * below).sum(axis=1) / (positives * negatives)
            if "pr_auc" in wanted:  # precision at each positive's threshold, weighted by it
                out["pr_auc"] = (wp * tp / np.maximum(tp + fp, 1)).sum(axis=1) / positives
    if any(m not in RANKED_METRICS for m in wanted):
        w = weights.astype("float64")
        total = w.sum(axis=1)
        for i, m in enumerate(MEAN_METRICS):
            if m in wanted:
                out[m] = w @ model.means[:, i] / total
        if "ece" in wanted:
            out["ece"] = np.abs(w @ model.means[:, 2:]).sum(axis=1) / total
    return {m: out[m] for m in wanted}


def weighted_metrics(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, wanted: Sequence[str]
) -> dict[str, np.ndarray]:
    """AUC, PR-AUC, log loss, Brier or ECE under each row of integer `weights` (resamples x
    rows), as sklearn's metrics with `sample_weight` (the bootstrap's kernel)."""
    model = _prepare(labels, scores)
    return _weighted(model, np.atleast_2d(weights)[:, model.layout], wanted)


def paired_bootstrap(
    labels: np.ndarray,
    new: np.ndarray,
    old: np.ndarray,
    wanted: Sequence[str],
    resamples: int,
    seed: int,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Worse-by of each wanted metric on all rows, and on `resamples` Poisson(1)-weighted
    resamples with both models on the same weights."""
    a, b = _prepare(labels, new), _prepare(labels, old)
    ones = np.ones((1, len(labels)), dtype="uint8")
    a1, b1 = _weighted(a, ones, wanted), _weighted(b, ones, wanted)
    point = {m: float(worse_by(m, a1[m][0], b1[m][0])) for m in wanted}
    # The weights are independent per row, so they are drawn in the new model's layout and
    # gathered once into the old one's.
    where_in_a = np.empty(len(labels), dtype="int64")
    where_in_a[a.layout] = np.arange(len(labels))
    b_from_a = where_in_a[b.layout]
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // max(1, len(labels)))
    draws: dict[str, list[np.ndarray]] = {m: [] for m in wanted}
    for start in range(0, resamples, chunk):
        shape = (min(chunk, resamples - start), len(labels))
        weights = _POISSON[rng.integers(0, 2**16, size=shape, dtype=np.uint16)]
        va, vb = _weighted(a, weights, wanted), _weighted(b, np.take(weights, b_from_a, 1), wanted)
        for m in wanted:
            draws[m].append(np.asarray(worse_by(m, va[m], vb[m])))
    return point, {m: np.concatenate(d) for m, d in draws.items()}


def regression_intervals(
    labels: np.ndarray,
    new: np.ndarray,
    old: np.ndarray,
    wanted: Sequence[str],
    confidence: float,
    resamples: int,
    seed: int,
) -> dict[str, Interval]:
    """The paired interval of each wanted metric's worse-by: DeLong for AUC, normal for log loss
    and Brier, a percentile bootstrap for PR-AUC and ECE."""
    out: dict[str, Interval] = {}
    if "auc" in wanted:
        out["auc"] = delong(labels, new, old, confidence)
    for m in MEAN_METRICS:
        if m in wanted:
            out[m] = paired_mean(m, labels, new, old, confidence)
    rest = [m for m in wanted if m not in out]
    if rest:
        point, draws = paired_bootstrap(labels, new, old, rest, resamples, seed)
        tail = (1 - confidence) / 2
        for m in rest:
            finite = draws[m][np.isfinite(draws[m])]
            low, high = np.quantile(finite, [tail, 1 - tail]) if len(finite) else (math.nan,) * 2
            out[m] = Interval(point[m], float(low), float(high), "bootstrap")
    return {m: out[m] for m in wanted}
