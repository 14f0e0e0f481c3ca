from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import pytest

from tasks.feature_store.store import (
    StoreSettings,
    apply_definitions,
    materialize,
    online_reader,
    open_store,
)
from tests.integration.conftest import ROOT

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
    service = store.get_feature_service(SERVICE)
    views = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
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
