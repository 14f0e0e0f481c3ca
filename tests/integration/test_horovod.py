from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.servers import BIN, ROOT

pytestmark = pytest.mark.integration
SCRIPT = ROOT / "tests" / "integration" / "horovod_smoke.py"


def _horovodrun(np: int, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(
        [
            str(BIN / "horovodrun"),
            "-np",
            str(np),
            "-H",
            f"localhost:{np}",
            "--gloo",
            *extra,
            str(BIN / "python"),
            str(SCRIPT),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=ROOT,
    )


def test_build_has_pytorch_and_gloo() -> None:
    done = subprocess.run(
        [str(BIN / "horovodrun"), "--check-build"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("[X] PyTorch" in line for line in lines) and any(
        "[X] Gloo" in line for line in lines
    )


def test_two_process_gloo_training_step_agrees() -> None:
    done = _horovodrun(2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank={rank} size=2 sum=1 same_weights=True" in done.stdout


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no NVIDIA GPU on this machine")
def test_two_process_nccl_on_gpus() -> None:
    import torch

    if torch.cuda.device_count() < 1:
        pytest.skip("torch sees no CUDA device")
    done = _horovodrun(min(2, torch.cuda.device_count()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="a GPU is present: the benchmark would run"
)
def test_gpu_benchmark_skips_cleanly_without_a_gpu() -> None:
    done = subprocess.run(
        [str(BIN / "python"), "-m", "bench.gpu_train"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "no NVIDIA GPU visible to torch: skipped" in done.stdout
