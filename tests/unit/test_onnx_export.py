"""ONNX export: onnxruntime's probabilities match the model's own (uncalibrated) scores."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from deployments.predictor import lightgbm_predictor
from deployments.torch_mlp import Encoding, TabularMLP, torch_predictor
from tasks.training.lightgbm_trainer import LightGBMParams, train_lightgbm
from tasks.training.onnx_export import INPUT, OnnxExportError, export_onnx

pytestmark = pytest.mark.unit

FEATURES = ["income", "ratio", "missed", "region", "purpose"]
CATEGORICAL = ["region", "purpose"]
# LightGBM's ONNX graph runs in float32 (inputs, thresholds, sums, sigmoid): most rows agree to
# ~1e-7, but a value that rounds across a split threshold takes the other branch (on the demo's
# 9,960 labelled rows: 2 rows off by more than 1e-5, at most 0.021). So: 99% of rows within
# TOLERANCE and under 1% further off. Measured here: max 6.9e-8 (LightGBM), 6e-8 (MLP); a wrong
# column order moves most rows by 1e-3 or more.
TOLERANCE = 1e-6


def float32_trees_agree(diff: np.ndarray) -> bool:
    return bool(np.quantile(diff, 0.99) < TOLERANCE and (diff > 1e-5).mean() < 0.01)


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.lognormal(10.5, 0.6, rows),
            "ratio": rng.uniform(0, 2, rows),
            "missed": rng.poisson(0.7, rows),
            "region": rng.integers(0, 5, rows),
            "purpose": rng.integers(0, 8, rows),
        }
    )
    frame.loc[rng.random(rows) < 0.1, "ratio"] = np.nan  # missing values take their own branch
    logit = -1.5 + 0.8 * frame["missed"] + frame["ratio"].fillna(1) - 0.3 * (frame["region"] == 2)
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(float)
    return frame


def _onnx_scores(model: bytes, frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    _, probabilities = session.run(None, {INPUT: frame[columns].to_numpy("float32")})
    assert probabilities.shape == (len(frame), 2)
    return np.asarray(probabilities[:, 1], dtype="float64")


def test_lightgbm_onnx_matches_the_booster() -> None:
    train, valid, rows = _frame(3_000, 0), _frame(600, 1), _frame(400, 2)
    params = LightGBMParams(num_boost_round=150, early_stopping_rounds=150, num_threads=1)
    trained = train_lightgbm(train, valid, FEATURES, CATEGORICAL, "label", params, 0, {"missed": 1})
    model = export_onnx("lightgbm", {"model.txt": trained.model_text.encode()}, FEATURES)

    own = lightgbm_predictor(trained.model_text, FEATURES)(rows)
    diff = np.abs(_onnx_scores(model, rows, FEATURES) - own)
    assert float32_trees_agree(diff), (np.quantile(diff, 0.99), diff.max())
    # the comparison can fail: the same rows in another column order score differently
    swapped = [FEATURES[1], FEATURES[0], *FEATURES[2:]]
    assert not float32_trees_agree(np.abs(_onnx_scores(model, rows, swapped) - own))

    loaded = onnx.load_from_string(model)
    props = {p.key: p.value for p in loaded.metadata_props}
    assert json.loads(props["features"]) == FEATURES and props["trainer"] == "lightgbm"


def test_torch_mlp_onnx_matches_the_module_with_its_encoding() -> None:
    train, rows = _frame(2_000, 3), _frame(300, 4)
    rows.loc[:9, "region"] = np.nan  # missing code -> 0
    rows.loc[10:19, "purpose"] = 40  # past the training range -> the last code
    encoding = Encoding.fit(train, FEATURES, CATEGORICAL)
    config = {"embedding_dim": 3, "hidden": [16, 8], "dropout": 0.1}
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(TabularMLP(encoding, **config).state_dict(), buffer)
    files = {
        "model.pt": buffer.getvalue(),
        "model.json": json.dumps({"encoding": encoding.to_dict(), "model": config}).encode(),
    }
    model = export_onnx("torch", files, FEATURES)

    own = torch_predictor(files["model.pt"], json.loads(files["model.json"]))(rows)
    diff = np.abs(_onnx_scores(model, rows, FEATURES) - own)
    assert diff.max() < TOLERANCE, diff.max()
    swapped = [FEATURES[1], FEATURES[0], *FEATURES[2:]]
    assert np.abs(_onnx_scores(model, rows, swapped) - own).max() > 100 * TOLERANCE


def test_unknown_trainer_and_mismatched_features_are_named() -> None:
    with pytest.raises(OnnxExportError, match="no ONNX export for trainer 'xgboost'"):
        export_onnx("xgboost", {}, FEATURES)
    train = _frame(500, 5)
    trained = train_lightgbm(
        train, train, FEATURES, CATEGORICAL, "label", LightGBMParams(num_boost_round=5), 0
    )
    with pytest.raises(OnnxExportError, match=r"reads 5 features, features\.json lists 4"):
        export_onnx("lightgbm", {"model.txt": trained.model_text.encode()}, FEATURES[:4])
