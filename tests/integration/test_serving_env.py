from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import numpy as np
import pytest

from tasks.feature_store.store import (
    StoreSettings,
    apply_definitions,
    materialize,
    online_reader,
    open_store,
    stored_features,
)
from tests.servers import ROOT

pytestmark = pytest.mark.integration
SERVING_PY = ROOT / ".venv-serving" / "bin" / "python"
SERVICE = "credit_risk_default_v1"


def test_serving_runtime_is_its_own_environment() -> None:
    """Seldon Core 1.18 imports in the serving venv, which holds no Prefect (see STACK.md)."""
    code = (
        "import importlib.util, seldon_core, lightgbm, numpy;"
        "print(seldon_core.__version__, numpy.__version__, importlib.util.find_spec('prefect') is None)"
    )
    done = subprocess.run(
        [str(SERVING_PY), "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    version, numpy_version, no_prefect = done.stdout.split()
    assert version == "1.18.2" and numpy_version.startswith("1.") and no_prefect == "True"
    check = subprocess.run(
        [str(SERVING_PY), "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout


def test_serving_env_reads_online_features_without_feast(credit_spec, tiny_features, tmp_path):
    """The SQLite online store is plain data: the serving venv (no Feast) reads what Feast wrote."""
    store = open_store(
        StoreSettings(
            repo_path=str(ROOT / "features"),
            registry_path=str(tmp_path / "registry.db"),
            sqlite_path=str(tmp_path / "online.db"),
        )
    )
    apply_definitions(store, credit_spec, str(tiny_features))
    materialize(store, credit_spec, end=datetime(2026, 1, 20, tzinfo=UTC))
    views = stored_features(store, SERVICE)
    rows = [{"customer_id": int(c)} for c in range(1, 40)]
    expected = online_reader(store, SERVICE).read(rows)
    code = (
        "import importlib.util, json, sys; from deployments.online_reader import OnlineReader;"
        "a = json.loads(sys.argv[1]); reader = OnlineReader(a['path'], 'mlops', a['views']);"
        "print(importlib.util.find_spec('feast') is None, json.dumps(reader.read(a['rows'])))"
    )
    request = json.dumps({"path": str(tmp_path / "online.db"), "views": views, "rows": rows})
    done = subprocess.run(
        [str(SERVING_PY), "-c", code, request], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    no_feast, values = done.stdout.split(" ", 1)
    assert no_feast == "True" and json.loads(values) == expected
    assert sum(v is not None for v in expected["annual_income"]) > 10


BANNED = (
    "prefect",
    "prefect_dask",
    "feast",
    "dask",
    "distributed",
    "sklearn",
    "tasks",
    "flows",
    "blocks",
)


def test_every_deployments_module_imports_in_the_serving_env() -> None:
    """deployments/ is the serving runtime's library: the serving interpreter, which has none of
    the platform's packages, imports each of its modules, and none pulls in the platform."""
    code = (
        "import importlib, json, pkgutil, sys; import deployments;"
        "names = [m.name for m in pkgutil.walk_packages(deployments.__path__, 'deployments.')];"
        "[importlib.import_module(n) for n in names];"
        f"print(json.dumps([names, [b for b in {BANNED!r} if b in sys.modules]]))"
    )
    done = subprocess.run(
        [str(SERVING_PY), "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    names, loaded = json.loads(done.stdout)
    assert {
        "deployments.calibration",
        "deployments.online_reader",
        "deployments.predictor",
        "deployments.torch_mlp",
    } <= set(names)
    assert loaded == []


def test_the_serving_env_loads_registry_versions_and_scores_as_the_platform(tmp_path) -> None:
    """A LightGBM and a torch version registered by the platform, each with a calibration, score
    the same rows to the same calibrated values when the serving interpreter loads them from
    the registry folder."""
    import numpy as np
    import pandas as pd

    from deployments.predictor import load_version
    from tasks.registry.store import Registry
    from tasks.training.calibration import calibrate
    from tasks.training.lightgbm_trainer import LightGBMParams
    from tasks.training.torch_trainer import TorchParams
    from tasks.training.trainers import TrainingInputs, fit
    from tasks.training.training_set import time_split

    rng = np.random.default_rng(0)
    n = 3_000
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "cat": rng.integers(0, 4, n),
        }
    )
    frame["y"] = (rng.random(n) < 1 / (1 + np.exp(-(frame["x1"] - frame["x2"])))).astype(float)
    split = time_split(frame, "ts")
    inputs = TrainingInputs(split, ["x1", "x2", "cat"], ["cat"], "y", 0)
    registry = Registry(str(tmp_path / "registry"))
    rows = frame.head(50)
    expected = {}
    for trainer, params, method in (
        ("lightgbm", LightGBMParams(num_boost_round=30), "platt"),
        ("torch", TorchParams(epochs=1), "isotonic"),
    ):
        raw = fit(trainer, inputs, params)  # type: ignore[arg-type]
        fitted = calibrate(raw, split.valid, "y", method)  # type: ignore[arg-type]
        assert fitted.uncalibrated is not None
        assert not np.array_equal(fitted.predict(rows), fitted.uncalibrated(rows))
        files = {
            **fitted.files,
            "features.json": json.dumps({"features": ["x1", "x2", "cat"]}).encode(),
        }
        registry.register(f"m-{trainer}", files, {"trainer": trainer})
        expected[trainer] = load_version(tmp_path / "registry", f"m-{trainer}", 1).predict(rows)
        np.testing.assert_array_equal(expected[trainer], fitted.predict(rows))
    code = (
        "import json, sys, pandas as pd; from deployments.predictor import load_version;"
        "rows = pd.DataFrame(json.loads(sys.argv[2]));"
        "print(json.dumps({t: load_version(sys.argv[1], f'm-{t}', 1).predict(rows).tolist()"
        " for t in ('lightgbm', 'torch')}))"
    )
    done = subprocess.run(
        [
            str(SERVING_PY),
            "-c",
            code,
            str(tmp_path / "registry"),
            json.dumps(rows.drop(columns="ts").to_dict("list")),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    served = json.loads(done.stdout)
    for trainer, scores in expected.items():
        assert served[trainer] == scores.tolist()


def test_on_demand_features_are_the_same_in_the_serving_env() -> None:
    """The function Feast runs for training sets gives the serving interpreter (no Feast,
    another pandas) the same values bit for bit, NaN and unknown categories included."""
    from features.credit_risk.on_demand import application_features

    rng = np.random.default_rng(4)
    n = 2_000
    rows = {
        "loan_amount": (rng.lognormal(9, 1, n)).round(2).tolist(),
        "term_months": rng.choice([12, 24, 36, 60], n).tolist(),
        "purpose": rng.choice(["car", "medical", "other", "boat"], n).tolist(),
        "annual_income": [
            None if i % 97 == 0 else float(v) for i, v in enumerate(rng.lognormal(11, 0.5, n))
        ],
    }
    rows["annual_income"][5] = 0.0
    expected = application_features(rows)
    code = (
        "import json, sys; from features.credit_risk.on_demand import application_features;"
        "print(json.dumps(application_features(json.loads(sys.stdin.read()))))"
    )
    done = subprocess.run(
        [str(SERVING_PY), "-c", code],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    served = json.loads(done.stdout)
    assert served.keys() == expected.keys()
    for name, values in expected.items():
        a, b = np.asarray(values, dtype="float64"), np.asarray(served[name], dtype="float64")
        np.testing.assert_array_equal(a, b)  # NaN == NaN here, and no tolerance
        assert a.tobytes() == b.tobytes()
