"""Every version also as ONNX (`model.onnx`): model as data for any ONNX runtime.

The graph takes one float32 tensor `features` of shape [rows, len(features)], the columns in
`features.json`'s order (categorical codes as numbers, NaN where missing), and gives `label`
(int64) and `probabilities` (float32, [rows, 2], column 1 the positive class). The scores are
the model's own, uncalibrated: `calibration.json` maps them as every other consumer does.

LightGBM goes through onnxmltools (a TreeEnsemble in float32: thresholds and inputs are cast,
so a value within float32 rounding of a threshold may take the other branch). The torch MLP is
exported with its input encoding (standardising, missing values, categorical codes) inside the
graph, computed in float64 as deployments/torch_mlp.py computes it.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import onnx

ONNX = "model.onnx"  # beside the model files of every version
OPSET = 17  # torch; onnxmltools 1.16 converts LightGBM up to 15
LIGHTGBM_OPSET = 15
INPUT = "features"
OUTPUTS = ("label", "probabilities")


class OnnxExportError(ValueError):
    """A model that cannot be exported; the message names the trainer and the step."""


def _lightgbm(files: Mapping[str, bytes], features: list[str]) -> onnx.ModelProto:
    import lightgbm as lgb
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = lgb.Booster(model_str=files["model.txt"].decode())
    if booster.num_feature() != len(features):
        raise OnnxExportError(
            f"lightgbm: the model reads {booster.num_feature()} features, features.json lists "
            f"{len(features)}"
        )
    model = onnxmltools.convert_lightgbm(
        booster,
        initial_types=[(INPUT, FloatTensorType([None, len(features)]))],
        zipmap=False,
        target_opset=LIGHTGBM_OPSET,
    )
    for output in [*model.graph.input, *model.graph.output]:  # `label` was declared one row
        output.type.tensor_type.shape.dim[0].dim_param = "rows"
    return model


def _torch(files: Mapping[str, bytes], features: list[str]) -> onnx.ModelProto:
    import torch

    from deployments.torch_mlp import load_mlp

    mlp, encoding = load_mlp(files["model.pt"], json.loads(files["model.json"]))
    missing = [c for c in [*encoding.numeric, *encoding.categorical] if c not in features]
    if missing:
        raise OnnxExportError(f"torch: the encoding reads {missing}, not in features.json")

    class Encoded(torch.nn.Module):
        """Raw feature columns in, Encoding.transform and the MLP inside."""

        numeric: torch.Tensor
        categorical: torch.Tensor
        means: torch.Tensor
        stds: torch.Tensor
        top: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.mlp = mlp
            self.register_buffer(
                "numeric",
                torch.tensor([features.index(c) for c in encoding.numeric], dtype=torch.long),
            )
            self.register_buffer(
                "categorical",
                torch.tensor([features.index(c) for c in encoding.categorical], dtype=torch.long),
            )
            self.register_buffer("means", torch.tensor(encoding.means, dtype=torch.float64))
            self.register_buffer("stds", torch.tensor(encoding.stds, dtype=torch.float64))
            self.register_buffer(
                "top", torch.tensor([n - 1 for n in encoding.cardinalities], dtype=torch.long)
            )

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            values = x.double()
            numeric = (values.index_select(1, self.numeric) - self.means) / self.stds
            numeric = torch.nan_to_num(numeric, nan=0.0).float()
            codes = values.index_select(1, self.categorical)
            codes = torch.where(torch.isnan(codes), torch.full_like(codes, -1.0), codes)
            # as .to_numpy("int64") (a cast truncates toward zero), shifted by one, clipped
            codes = torch.minimum(torch.clamp(codes.long() + 1, min=0), self.top)
            p = torch.sigmoid(self.mlp(numeric, codes))
            return (p > 0.5).long(), torch.stack([1.0 - p, p], dim=1)

    with tempfile.TemporaryDirectory(prefix="mlops-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter warns that it is deprecated
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Encoded().eval(),
                (torch.zeros((2, len(features)), dtype=torch.float32),),
                path,
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_axes={name: {0: "rows"} for name in (INPUT, *OUTPUTS)},
                opset_version=OPSET,
                dynamo=False,  # the dynamo exporter needs onnxscript, which the lock lacks
            )
        return onnx.load(path)


EXPORTERS: dict[str, Callable[[Mapping[str, bytes], list[str]], onnx.ModelProto]] = {
    "lightgbm": _lightgbm,
    "torch": _torch,
}


def export_onnx(trainer: str, files: Mapping[str, bytes], features: list[str]) -> bytes:
    """The serialized ONNX model of a trainer's model `files` (as the registry stores them),
    checked by onnx's checker, with the feature names in its metadata."""
    if trainer not in EXPORTERS:
        raise OnnxExportError(
            f"no ONNX export for trainer {trainer!r} (known: {sorted(EXPORTERS)})"
        )
    try:
        model = EXPORTERS[trainer](files, list(features))
    except OnnxExportError:
        raise
    except Exception as exc:
        raise OnnxExportError(f"{trainer}: ONNX export failed: {exc}") from exc
    meta = {
        "features": json.dumps(list(features)),
        "trainer": trainer,
        "scores": "uncalibrated probabilities[:, 1]; calibration.json maps them",
    }
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
