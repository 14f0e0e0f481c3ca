"""Explanations with InterpretML: a glass-box EBM reference and black-box explainers, plus plots.

interpret's black-box explainers reject missing values, so they see the sample with each
column's missing values filled by its median; the EBM handles missing values itself.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Protocol

import matplotlib

matplotlib.use("Agg")  # no display on workers
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from interpret.blackbox import (
    LimeTabular,
    MorrisSensitivity,
    PartialDependence,
    ShapKernel,
)
from interpret.glassbox import ExplainableBoostingClassifier
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import roc_auc_score

from deployments.predictor import REFERENCE, LoadedModel, Predict
from tasks.registry.store import Registry
from tasks.specs.dataset_spec import DatasetSpec


class ExplainOptions(BaseModel):
    """Sample sizes, chosen so explanations stay a fraction of training time on 2 cores."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(default=500, ge=50, le=20_000, description="Rows for Morris and PDP.")
    ebm_rows: int = Field(
        default=5_000, ge=200, le=200_000, description="EBM rows from the reference sample."
    )
    pdp_features: int = Field(default=3, ge=0, le=20, description="Most important, plotted.")
    local_rows: int = Field(default=3, ge=0, le=50, description="Rows explained by SHAP/LIME.")
    shap_background: int = Field(default=30, ge=5, le=500)


class GlassBox(BaseModel):
    rows: int
    test_auc: float
    fit_seconds: float
    importances: dict[str, float]


class LocalExplanation(BaseModel):
    method: str
    row: int
    score: float
    contributions: dict[str, float]  # the largest, by absolute value


def filled(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """`frame[features]` with missing values replaced by the column median (0 if all missing)."""
    data = frame[features].astype("float64")
    return data.fillna(data.median().fillna(0.0))


def _proba(predict: Predict, features: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    def proba(x: np.ndarray) -> np.ndarray:
        p = predict(pd.DataFrame(np.atleast_2d(x), columns=features))
        return np.column_stack([1 - p, p])

    return proba


def morris_importances(predict: Predict, sample: pd.DataFrame) -> dict[str, float]:
    """Global sensitivity (Morris mu*) of the predicted probability to each feature."""
    features = list(sample.columns)
    data = MorrisSensitivity(
        _proba(predict, features), sample.to_numpy(), feature_names=features
    ).explain_global()
    scores = np.asarray(data.data()["scores"], dtype="float64")
    return dict(zip(data.data()["names"], (float(s) for s in scores), strict=True))


def partial_dependence(
    predict: Predict, sample: pd.DataFrame, features: list[str]
) -> dict[str, dict[str, list[float]]]:
    """Average prediction over a grid of each feature's values."""
    names = list(sample.columns)
    explanation = PartialDependence(
        _proba(predict, names), sample.to_numpy(), feature_names=names, num_points=12
    ).explain_global()
    out = {}
    for f in features:
        d = explanation.data(names.index(f))
        out[f] = {
            "values": [float(v) for v in np.asarray(d["names"], dtype="float64")],
            "scores": [float(v) for v in np.asarray(d["scores"], dtype="float64")],
        }
    return out


def local_explanations(
    predict: Predict, sample: pd.DataFrame, rows: list[int], background: int, top: int = 8
) -> list[LocalExplanation]:
    """SHAP (kernel) and LIME attributions for the sample rows at `rows`."""
    if not rows:
        return []
    names = list(sample.columns)
    fn = _proba(predict, names)
    x = sample.to_numpy()[rows]
    scores = fn(x)[:, 1]
    explainers = {
        "shap": ShapKernel(fn, sample.to_numpy()[:background], feature_names=names),
        "lime": LimeTabular(fn, sample.to_numpy(), feature_names=names, random_state=0),
    }
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method, explainer in explainers.items():
            kwargs = {"silent": True} if method == "shap" else {}
            explanation = explainer.explain_local(x, **kwargs)
            for i, row in enumerate(rows):
                d = explanation.data(i)
                pairs = sorted(
                    zip(d["names"], (float(s) for s in d["scores"]), strict=True),
                    key=lambda p: -abs(p[1]),
                )[:top]
                out.append(
                    LocalExplanation(
                        method=method, row=row, score=float(scores[i]), contributions=dict(pairs)
                    )
                )
    return out


def glass_box(
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    label: str,
    seed: int,
) -> GlassBox:
    """An EBM fitted on `train` as the interpretable reference; its AUC on `test`."""
    types = ["nominal" if f in categorical else "continuous" for f in features]
    started = time.perf_counter()
    ebm = ExplainableBoostingClassifier(
        feature_names=features,
        feature_types=types,
        outer_bags=2,
        interactions=0,
        n_jobs=2,
        random_state=seed,
    )
    with warnings.catch_warnings():  # it warns that its plots do not show missing values
        warnings.simplefilter("ignore", UserWarning)
        ebm.fit(train[features], train[label].astype("int64"))
    seconds = time.perf_counter() - started
    scores = ebm.predict_proba(test[features])[:, 1]
    both = test[label].nunique() == 2
    data = ebm.explain_global().data()
    return GlassBox(
        rows=len(train),
        test_auc=float(roc_auc_score(test[label], scores)) if both else float("nan"),
        fit_seconds=seconds,
        importances={n: float(s) for n, s in zip(data["names"], data["scores"], strict=True)},
    )


def shares(importances: dict[str, float]) -> dict[str, float]:
    total = sum(abs(v) for v in importances.values()) or 1.0
    return {k: abs(v) / total for k, v in importances.items()}


class ImportanceMove(BaseModel):
    feature: str
    candidate: float
    champion: float
    change: float


def importance_moves(
    candidate: dict[str, float], champion: dict[str, float], top: int = 10
) -> list[ImportanceMove]:
    """Features whose share of the total importance moved most between the two models."""
    new, old = shares(candidate), shares(champion)
    moves = [
        ImportanceMove(
            feature=f,
            candidate=new.get(f, 0.0),
            champion=old.get(f, 0.0),
            change=new.get(f, 0.0) - old.get(f, 0.0),
        )
        for f in sorted({*new, *old})
    ]
    return sorted(moves, key=lambda m: -abs(m.change))[:top]


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def importance_plot(models: dict[str, dict[str, float]], top: int = 15) -> bytes:
    """Horizontal bars of importance shares, the first model's top features, one bar per model."""
    first = shares(next(iter(models.values())))
    features = sorted(first, key=lambda f: first[f])[-top:]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(features) + 1.5))
    height = 0.8 / len(models)
    for i, (name, importances) in enumerate(models.items()):
        s = shares(importances)
        y = np.arange(len(features)) + i * height
        ax.barh(y, [s.get(f, 0.0) for f in features], height=height, label=name)
    ax.set_yticks(np.arange(len(features)) + 0.4 - height / 2, features)
    ax.set_xlabel("share of total importance (Morris mu*)")
    ax.legend(loc="lower right")
    return _png(fig)


def dependence_plot(curves: dict[str, dict[str, dict[str, list[float]]]], feature: str) -> bytes:
    """Partial dependence of the predicted probability on one feature, one line per model."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, per_feature in curves.items():
        if feature in per_feature:
            c = per_feature[feature]
            ax.plot(c["values"], c["scores"], marker="o", label=name)
    ax.set_xlabel(feature)
    ax.set_ylabel("mean predicted probability")
    ax.legend()
    return _png(fig)


class Explained(Protocol):
    @property
    def features(self) -> list[str]: ...
    @property
    def predict(self) -> Predict: ...


class Explanation(BaseModel):
    importances: dict[str, dict[str, float]]  # model label -> feature -> Morris mu*
    glass_box: GlassBox
    local: list[LocalExplanation]
    dependence: dict[str, dict[str, dict[str, list[float]]]]  # model -> feature -> curve
    plots: dict[str, bytes]
    seconds: float


def explain_models(
    models: Mapping[str, Explained],
    train: pd.DataFrame,
    test: pd.DataFrame,
    categorical: list[str],
    label: str,
    opts: ExplainOptions,
    seed: int,
    started: float,
) -> Explanation:
    """Explain the first model (the candidate), compare it with the others, fit the EBM.

    `train` holds labelled training rows for the glass box; `started` is a perf_counter value.
    """
    candidate = next(iter(models.values()))
    sample = test.sample(min(opts.rows, len(test)), random_state=seed)
    background = filled(sample, list(dict.fromkeys(f for m in models.values() for f in m.features)))
    importances = {
        k: {f: v for f, v in morris_importances(m.predict, background).items() if f in m.features}
        for k, m in models.items()
    }
    first = next(iter(importances.values()))
    top = sorted(first, key=lambda f: -first[f])[: opts.pdp_features]
    dependence = {
        k: partial_dependence(m.predict, background, [f for f in top if f in m.features])
        for k, m in models.items()
    }
    order = np.argsort(candidate.predict(background))
    rows = sorted({int(order[-1]), int(order[len(order) // 2]), int(order[0])})[: opts.local_rows]
    reference = glass_box(train, test, candidate.features, categorical, label, seed)
    plots = {"importances.png": importance_plot({**importances, "EBM": reference.importances})}
    for f in top:
        plots[f"dependence-{f}.png"] = dependence_plot(dependence, f)
    return Explanation(
        importances=importances,
        glass_box=reference,
        local=local_explanations(candidate.predict, background, rows, opts.shap_background),
        dependence=dependence,
        plots=plots,
        seconds=time.perf_counter() - started,
    )


class ExplainError(ValueError):
    """A version that cannot be explained; the message names the model, version and file."""


def explain_versions(
    registry: Registry,
    spec: DatasetSpec,
    test: pd.DataFrame,
    candidate: LoadedModel,
    champion: LoadedModel | None,
    opts: ExplainOptions,
    seed: int,
) -> Explanation:
    """Explain a candidate (and compare with the champion); the glass box learns from the
    candidate's reference sample of training rows."""
    started = time.perf_counter()
    named = {f"candidate v{candidate.version}": candidate}
    if champion is not None:
        named[f"champion v{champion.version}"] = champion
    reference = pd.read_parquet(registry.file_uri(candidate.name, candidate.version, REFERENCE))
    if spec.label.column not in reference.columns:
        raise ExplainError(
            f"model '{candidate.name}' v{candidate.version}: {REFERENCE} has no label column "
            f"'{spec.label.column}' (registered by an older training flow; train it again)"
        )
    train = reference.sample(min(opts.ebm_rows, len(reference)), random_state=seed)
    categorical = candidate.metadata.get("categorical", [])
    return explain_models(named, train, test, categorical, spec.label.column, opts, seed, started)
