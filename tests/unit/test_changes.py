"""Which pipelines a push changed (what `mlops pipeline-updated` announces from CI)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from flows import FLOWS
from flows.changes import NO_COMMIT, changed_files, changed_pipelines, module_files

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINTS = {name: f.entrypoint for name, f in FLOWS.items()}


def test_a_pipeline_is_the_modules_its_entrypoint_imports() -> None:
    training = module_files(ENTRYPOINTS["training"], ROOT)
    assert ROOT / "flows/training.py" in training
    assert ROOT / "tasks/training/lightgbm_trainer.py" in training  # imported indirectly
    assert ROOT / "tasks/monitoring/traffic.py" not in training
    assert ROOT / "tasks/monitoring/traffic.py" in module_files(ENTRYPOINTS["monitoring"], ROOT)


def test_changed_files_map_to_the_pipelines_made_of_them() -> None:
    changed = changed_pipelines(["tasks/training/lightgbm_trainer.py"], ENTRYPOINTS, ROOT)
    assert "training" in changed and "retraining" in changed
    assert "monitoring" not in changed and "data-prep" not in changed
    assert changed["training"] == ["tasks/training/lightgbm_trainer.py"]
    assert changed_pipelines(["README.md", "docs/loop.png"], ENTRYPOINTS, ROOT) == {}
    assert set(changed_pipelines(["requirements.lock"], ENTRYPOINTS, ROOT)) == set(FLOWS)
    spec = changed_pipelines(["features/credit_risk/dataset.yaml"], ENTRYPOINTS, ROOT)
    assert {"data-prep", "training", "validation"} <= set(spec)  # they load the specs
    # a transform the spec names as "module:function" (imported at run time, not by the flow)
    transform = changed_pipelines(["features/credit_risk/transforms.py"], ENTRYPOINTS, ROOT)
    assert {"data-prep", "training", "retraining"} <= set(transform)


def test_an_unknown_earlier_commit_means_every_pipeline(tmp_path: Path) -> None:
    assert changed_files(NO_COMMIT, "HEAD", ROOT) is None
    assert changed_files("", "HEAD", ROOT) is None
    assert changed_files("f" * 40, "HEAD", ROOT) is None  # not in this clone (shallow)
    first = subprocess.run(
        ["git", "rev-list", "--max-parents=0", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()[0]
    files = changed_files(first, "HEAD", ROOT)
    assert files is not None and "flows/training.py" in files
