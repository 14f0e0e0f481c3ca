"""The model server's image recipe (deployments/seldon/Dockerfile).

No container engine runs here, so the image is never built: the test reads the Dockerfile, then
runs its install step (deployments/seldon/install.sh, the very script the Dockerfile RUNs) in a
fresh venv of the same Python and checks that the result is exactly the serving lock.
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.servers import ROOT

pytestmark = pytest.mark.integration

RECIPE = ROOT / "deployments" / "seldon"
LOCK = ROOT / "deployments" / "serving" / "requirements.lock"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    steps: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        steps.append((word.upper(), " ".join(rest.split())))
        pending = ""
    return steps


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not a pin: {line!r}"
            found[canonicalize_name(name)] = version.strip()
    return found


def test_the_dockerfile_installs_the_serving_lock_with_install_sh() -> None:
    steps = instructions(RECIPE / "Dockerfile")
    assert steps[0] == ("FROM", "python:3.11-slim")
    copies = [shlex.split(args) for word, args in steps if word == "COPY"]
    copied = {src[0]: src[-1] for src in copies}
    lock_in_image = copied["deployments/serving/requirements.lock"]
    script_in_image = copied["deployments/seldon/install.sh"]
    runs = [args for word, args in steps if word == "RUN"]
    [install] = [r for r in runs if "install.sh" in r]
    assert f"bash {script_in_image} python {lock_in_image}" in install
    # The install runs before the code is copied, so a code change reuses the layer.
    order = [(w, a) for w, a in steps if w in ("COPY", "RUN")]
    assert order.index(("RUN", install)) < order.index(("COPY", "deployments/ /microservice/deployments/"))  # fmt: skip
    assert ("COPY", "features/ /microservice/features/") in steps
    env = " ".join(args for word, args in steps if word == "ENV")
    for setting in (
        "MODEL_NAME=deployments.model_server.ModelServer",
        "SERVICE_TYPE=MODEL",
        "PERSISTENCE=0",
        "PYTHONPATH=/microservice",
    ):
        assert setting in env.split()
    [user] = [args for word, args in steps if word == "USER"]
    assert user not in ("root", "0") and user.isdigit()
    assert ("EXPOSE", "9000 5000 6000") in steps
    assert steps[-1] == ("CMD", "exec seldon-core-microservice $MODEL_NAME --service-type $SERVICE_TYPE")  # fmt: skip


def test_model_name_names_the_model_server_class() -> None:
    tree = ast.parse((ROOT / "deployments" / "model_server.py").read_text())
    assert "ModelServer" in {n.name for n in tree.body if isinstance(n, ast.ClassDef)}


@pytest.mark.timeout(1200)
def test_install_sh_in_a_fresh_venv_gives_exactly_the_serving_lock(tmp_path: Path) -> None:
    python311 = shutil.which("python3.11")
    assert python311, "python3.11 is needed (the image's Python)"
    venv = tmp_path / "venv"
    subprocess.run([python311, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    done = subprocess.run(
        ["bash", str(RECIPE / "install.sh"), python],
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "No broken requirements found" in done.stdout

    freeze = subprocess.run(
        [python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    installed = pins([line for line in freeze if not re.match(r"(?i)^pip==", line)])
    locked = pins(LOCK.read_text().splitlines())
    assert installed.keys() == locked.keys(), (
        f"not in the lock: {sorted(installed.keys() - locked.keys())}; "
        f"missing: {sorted(locked.keys() - installed.keys())}"
    )
    # `torch==2.13.0` is met by the CPU build, 2.13.0+cpu: the same release, a local label.
    differ = {n: (installed[n], v) for n, v in locked.items() if Version(installed[n]).public != v}
    assert differ == {}

    code = (
        "import seldon_core, lightgbm, torch, importlib;"
        "importlib.import_module('deployments.model_server').ModelServer;"
        "print(seldon_core.__version__, lightgbm.__version__, torch.__version__)"
    )
    imported = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    seldon, lightgbm, torch = imported.stdout.split()
    assert (seldon, lightgbm) == (locked["seldon-core"], locked["lightgbm"])
    assert Version(torch).public == locked["torch"]
    assert (venv / "bin" / "seldon-core-microservice").exists()
