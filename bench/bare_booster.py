"""Serving classes for bench/serve.py, run by `seldon-core-microservice` in `.venv-serving`
(imports only LightGBM, NumPy and the model server, never the platform).

- `BareBooster`: setup (b), the least a Seldon python-wrapper class can do: `load()` reads
  the version's `model.txt`, `predict(X, names)` returns `booster.predict(X)` (X as float64;
  raw scores, no calibration, no checks, no request log, no metrics).
- `UnloggedModelServer`: the model server with `_log` a no-op, to price the request log.

Both take (and ignore) the parameters the local serving target passes every predictor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from deployments.model_server import ModelServer


class BareBooster:
    def __init__(self, model_dir: str, **_: Any) -> None:
        self.model_dir = model_dir
        self.booster: lgb.Booster | None = None

    def load(self) -> None:
        self.booster = lgb.Booster(model_file=str(Path(self.model_dir) / "model.txt"))

    def predict(self, X: Any, names: Any) -> np.ndarray:
        assert self.booster is not None
        return np.asarray(self.booster.predict(np.asarray(X, dtype="float64")))


class UnloggedModelServer(ModelServer):
    def _log(self, *args: Any, **kwargs: Any) -> None:
        return None
