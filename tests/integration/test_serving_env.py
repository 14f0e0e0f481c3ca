from __future__ import annotations

import subprocess

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration
SERVING_PY = ROOT / ".venv-serving" / "bin" / "python"


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
