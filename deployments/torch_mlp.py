"""The tabular MLP, its input encoding and its predictor: shared by the trainer, its workers
and serving (the state_dict is loaded with `weights_only=True`: no pickle)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn


@dataclass(frozen=True)
class Encoding:
    """How a frame becomes tensors: standardised numerics, categorical codes shifted by one."""

    numeric: list[str]
    categorical: list[str]
    cardinalities: list[int]
    means: list[float]
    stds: list[float]

    @classmethod
    def fit(cls, frame: pd.DataFrame, features: list[str], categorical: list[str]) -> Encoding:
        cats = [c for c in features if c in categorical]
        nums = [c for c in features if c not in cats]
        values = frame[nums].astype("float64")
        std = values.std().fillna(1.0).replace(0.0, 1.0)
        return cls(
            numeric=nums,
            categorical=cats,
            cardinalities=[int(frame[c].max()) + 2 if len(frame) else 2 for c in cats],
            means=values.mean().fillna(0.0).tolist(),
            stds=std.tolist(),
        )

    def transform(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        x = frame[self.numeric].astype("float64").to_numpy()
        x = np.nan_to_num((x - np.array(self.means)) / np.array(self.stds), nan=0.0)
        codes = (
            np.stack(
                [
                    # unknown (-1) or missing -> 0; codes past the training range -> the last
                    np.clip(frame[c].fillna(-1).to_numpy("int64") + 1, 0, n - 1)
                    for c, n in zip(self.categorical, self.cardinalities, strict=True)
                ],
                axis=1,
            )
            if self.categorical
            else np.zeros((len(frame), 0), dtype="int64")
        )
        return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(codes, dtype=torch.long)

    def to_dict(self) -> dict[str, list]:
        return asdict(self)


class TabularMLP(nn.Module):
    def __init__(self, encoding: Encoding, embedding_dim: int, hidden: list[int], dropout: float):
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(n, embedding_dim) for n in encoding.cardinalities
        )
        width = len(encoding.numeric) + embedding_dim * len(encoding.cardinalities)
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        parts = [numeric, *(emb(codes[:, i]) for i, emb in enumerate(self.embeddings))]
        return self.body(torch.cat(parts, dim=1)).squeeze(1)


def load_mlp(state: bytes, config: dict[str, Any]) -> tuple[TabularMLP, Encoding]:
    encoding = Encoding(**config["encoding"])
    model = TabularMLP(encoding, **config["model"])
    model.load_state_dict(torch.load(io.BytesIO(state), weights_only=True))
    return model.eval(), encoding


def torch_predictor(state: bytes, config: dict[str, Any]) -> Callable[[pd.DataFrame], np.ndarray]:
    """Load once; the returned function scores frames (probability of the positive class)."""
    model, encoding = load_mlp(state, config)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        numeric, codes = encoding.transform(frame)
        with torch.no_grad():
            return torch.sigmoid(model(numeric, codes)).numpy().astype("float64")

    return predict
