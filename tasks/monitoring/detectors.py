"""Alibi Detect drift detectors that travel with a version, and one window's check.

Two detectors per version, fitted on its reference sample (training rows):
- `TabularDrift` over the watched features: KS per numeric feature, Chi-squared per categorical
  one (declared as such), Benjamini-Hochberg over the features;
- `KSDrift` on the version's own calibrated scores (prediction drift).

They are saved with Alibi Detect's `save_detector` (config.toml + x_ref.npy): numeric x_ref and
no preprocess_fn, so nothing is pickled. The registry keeps flat file names, so each detector's
files are stored as `<detector>.<file>` and put back into a folder to load. Nothing is unpickled
on load either: a config.toml is read as data first and refused unless it is one of these two
detectors with its x_ref in x_ref.npy and no other file (Alibi Detect would `dill.load` a
preprocess_fn or kernel it names), and x_ref.npy is read with `allow_pickle=False`.
"""

from __future__ import annotations

import io
import json
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FEATURE_DETECTOR = "drift-features"
SCORE_DETECTOR = "drift-scores"
DRIFT_INFO = "drift.json"
DETECTOR_FILES = ("config.toml", "x_ref.npy")
# a missing value is a value of its own for the detectors (KS and Chi-squared take no NaN), so a
# change in how often a feature is missing is a change of its distribution
MISSING = -1.0e12
SCORE = "score"


DETECTOR_CLASSES = {FEATURE_DETECTOR: "TabularDrift", SCORE_DETECTOR: "KSDrift"}
# what save_detector writes for them; any other key may name a file Alibi Detect would unpickle
CONFIG_KEYS = {
    "name",
    "x_ref",
    "preprocess_fn",
    "input_shape",
    "data_type",
    "x_ref_preprocessed",
    "p_val",
    "preprocess_at_init",
    "update_x_ref",
    "correction",
    "alternative",
    "n_features",
    "categories_per_feature",
    "meta",
}


class DetectorMismatch(ValueError):
    """A version's detectors watch features its served records do not carry."""


class DetectorLoadError(ValueError):
    """A detector file that is refused or cannot be loaded; the message names the file."""


def detector_file_names() -> list[str]:
    return [f"{d}.{f}" for d in (FEATURE_DETECTOR, SCORE_DETECTOR) for f in DETECTOR_FILES] + [
        DRIFT_INFO
    ]


def has_detectors(files: Sequence[str]) -> bool:
    return set(detector_file_names()) <= set(files)


def as_matrix(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    values = frame[list(features)].apply(pd.to_numeric, errors="coerce").to_numpy("float64")
    return np.where(np.isnan(values), MISSING, values)


def fit_detector_files(
    reference: pd.DataFrame,
    scores: np.ndarray,
    features: Sequence[str],
    categorical: Sequence[str],
    p_value: float = 0.05,
) -> dict[str, bytes]:
    """Fit the feature detector on `reference` (rows of `features`) and the score detector on
    `scores`, the version's out-of-sample scores (test split); their files.

    The detectors' own `p_val` is Alibi Detect's default; monitoring decides with its policy's
    p-value from the p-values they return (`check_window`)."""
    from alibi_detect.cd import KSDrift, TabularDrift  # ~6 s import: only where detectors are
    from alibi_detect.saving import save_detector

    if not features:
        raise ValueError("no features to watch for drift")
    x_ref = as_matrix(reference, features)
    categories = {i: None for i, f in enumerate(features) if f in set(categorical)}
    detectors = {
        FEATURE_DETECTOR: TabularDrift(
            x_ref, p_val=p_value, categories_per_feature=categories, correction="fdr"
        ),
        SCORE_DETECTOR: KSDrift(np.asarray(scores, dtype="float64").reshape(-1, 1), p_val=p_value),
    }
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, detector in detectors.items():
            folder = Path(tmp) / name
            save_detector(detector, folder)
            written = sorted(p.name for p in folder.iterdir())
            if written != sorted(DETECTOR_FILES):  # e.g. a .dill: it would be unpickled on load
                raise RuntimeError(f"{name}: save_detector wrote {written}, not {DETECTOR_FILES}")
            for file in written:
                files[f"{name}.{file}"] = (folder / file).read_bytes()
    info = {
        "features": list(features),
        "categorical": [f for f in features if f in set(categorical)],
        "reference_rows": len(reference),
        "missing_value": MISSING,
    }
    files[DRIFT_INFO] = json.dumps(info, indent=2).encode()
    return files


@dataclass
class Detectors:
    features: list[str]
    categorical: list[str]
    feature_detector: Any
    score_detector: Any
    origin: str = "registered with the version"

    @property
    def x_ref(self) -> np.ndarray:
        return np.asarray(self.feature_detector.x_ref)

    @property
    def score_ref(self) -> np.ndarray:
        return np.asarray(self.score_detector.x_ref).ravel()


def check_config(name: str, text: bytes) -> None:
    """Refuse a detector's config.toml unless it is what `fit_detector_files` writes for
    `name` (so nothing it names is unpickled); DetectorLoadError names the file."""
    where = f"{name}.config.toml"
    try:
        config = tomllib.loads(text.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DetectorLoadError(f"{where}: not a TOML detector config ({exc})") from exc
    unknown = sorted(set(config) - CONFIG_KEYS)
    problems = [f"unknown field(s) {unknown}"] if unknown else []
    if config.get("name") != DETECTOR_CLASSES[name]:
        problems.append(f"name {config.get('name')!r}, not {DETECTOR_CLASSES[name]!r}")
    if config.get("x_ref") != "x_ref.npy":
        problems.append(f"x_ref {config.get('x_ref')!r}, not 'x_ref.npy'")
    if config.get("preprocess_fn", "None") != "None":
        problems.append(f"preprocess_fn {config.get('preprocess_fn')!r} (only none is loaded)")
    if problems:
        raise DetectorLoadError(f"{where}: refused, it could load code: {'; '.join(problems)}")


def check_x_ref(name: str, data: bytes) -> None:
    """Refuse a detector's x_ref.npy unless it is a plain numeric array (an object array is
    a pickle); DetectorLoadError names the file."""
    try:
        x_ref = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DetectorLoadError(f"{name}.x_ref.npy: refused, not a numeric array ({exc})") from exc
    if not isinstance(x_ref, np.ndarray) or x_ref.dtype.kind not in "biuf":
        raise DetectorLoadError(f"{name}.x_ref.npy: refused, not a numeric array")


def load_detectors(
    read: Callable[[str], bytes], origin: str = "registered with the version", where: str = ""
):
    """Detectors from their files (`read(name) -> bytes`), loaded by Alibi Detect without
    unpickling anything; DetectorLoadError (prefixed by `where`) names a refused file."""
    from alibi_detect.saving import load_detector

    prefix = f"{where}: " if where else ""
    try:
        info = json.loads(read(DRIFT_INFO))
    except ValueError as exc:
        raise DetectorLoadError(f"{prefix}{DRIFT_INFO}: not JSON ({exc})") from exc
    loaded = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in (FEATURE_DETECTOR, SCORE_DETECTOR):
            folder = Path(tmp) / name
            folder.mkdir()
            for file in DETECTOR_FILES:
                (folder / file).write_bytes(read(f"{name}.{file}"))
            try:
                check_config(name, (folder / "config.toml").read_bytes())
                check_x_ref(name, (folder / "x_ref.npy").read_bytes())
            except DetectorLoadError as exc:
                raise DetectorLoadError(f"{prefix}{exc}") from None
            try:  # the config itself, never a folder (which may load a legacy meta.dill)
                loaded[name] = load_detector(folder / "config.toml", enable_unsafe_loading=False)
            except Exception as exc:
                raise DetectorLoadError(
                    f"{prefix}{name}.config.toml / {name}.x_ref.npy: cannot load the detector "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
    return Detectors(
        info["features"],
        info["categorical"],
        loaded[FEATURE_DETECTOR],
        loaded[SCORE_DETECTOR],
        origin,
    )


def benjamini_hochberg(p_values: np.ndarray, q: float) -> np.ndarray:
    """Which hypotheses Benjamini-Hochberg rejects at false-discovery rate `q`."""
    p = np.asarray(p_values, dtype="float64")
    m = len(p)
    order = np.argsort(p)
    passed = p[order] <= q * np.arange(1, m + 1) / m
    rejected = np.zeros(m, dtype=bool)
    if passed.any():
        rejected[order[: int(np.max(np.nonzero(passed))) + 1]] = True
    return rejected


@dataclass
class FeatureDrift:
    feature: str
    p_value: float
    distance: float
    drifted: bool


@dataclass
class WindowCheck:
    """One window of one served (version, role): the detectors' verdict and its evidence."""

    rows: int
    first: str
    last: str
    features: list[FeatureDrift] = field(default_factory=list)
    score_p_value: float = 1.0
    score_distance: float = 0.0
    score_drifted: bool = False

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def drift(self) -> bool:
        return self.score_drifted or bool(self.drifted_features)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "first": self.first,
            "last": self.last,
            "drift": self.drift,
            "drifted_features": self.drifted_features,
            "features": [vars(f) for f in self.features],
            "score": {
                "p_value": self.score_p_value,
                "distance": self.score_distance,
                "drifted": self.score_drifted,
            },
        }


def check_features(detectors: Detectors, served: Sequence[str], version: int) -> None:
    missing = [f for f in detectors.features if f not in set(served)]
    if missing:
        raise DetectorMismatch(
            f"version {version}: its detectors watch {detectors.features}, but the records it "
            f"served carry {sorted(served)}; missing {missing}"
        )


def check_window(
    detectors: Detectors, window: pd.DataFrame, p_value: float, first: str, last: str
) -> WindowCheck:
    """Run both detectors on `window` (the watched features and `score`).

    The false-alarm budget `p_value` is split between the two detectors; within the features,
    Benjamini-Hochberg at that level decides which drifted.
    """
    half = p_value / 2
    x = as_matrix(window, detectors.features)
    data = detectors.feature_detector.predict(
        x, drift_type="feature", return_p_val=True, return_distance=True
    )["data"]
    p = np.asarray(data["p_val"], dtype="float64").ravel()
    distance = np.asarray(data["distance"], dtype="float64").ravel()
    drifted = benjamini_hochberg(p, half)
    scores = window[SCORE].to_numpy("float64").reshape(-1, 1)
    score = detectors.score_detector.predict(scores, return_p_val=True, return_distance=True)
    score_p = float(np.asarray(score["data"]["p_val"]).ravel()[0])
    return WindowCheck(
        rows=len(window),
        first=first,
        last=last,
        features=[
            FeatureDrift(f, float(p[i]), float(distance[i]), bool(drifted[i]))
            for i, f in enumerate(detectors.features)
        ],
        score_p_value=score_p,
        score_distance=float(np.asarray(score["data"]["distance"]).ravel()[0]),
        score_drifted=score_p <= half,
    )


def drift_features(watched: Sequence[str], model_features: Sequence[str]) -> list[str]:
    """The spec's watched features the version takes (all its features if none are named)."""
    return [f for f in watched if f in set(model_features)] or list(model_features)


def read_files(files: Mapping[str, bytes]) -> Callable[[str], bytes]:
    return lambda name: files[name]
