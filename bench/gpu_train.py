"""GPU benchmark of the PyTorch trainer: Horovod with NCCL on one GPU, then on all of them.

On a machine with NVIDIA GPUs: rebuilds Horovod with NCCL if the installed build lacks it
(`.ci/build_horovod.sh` adds HOROVOD_GPU_OPERATIONS=NCCL when `nvidia-smi` answers), trains the
tabular MLP with `device=cuda` on 1 GPU and on every GPU, and prints samples/s and the peak GPU
memory of rank 0. Without a GPU it says so and exits 0 (CI never has one).

    python -m bench.gpu_train [--rows 2000000 --epochs 3 --batch-size 65536]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from bench.train import frame
from tasks.training.torch_trainer import TorchParams, train_torch
from tasks.training.training_set import time_split

ROOT = Path(__file__).resolve().parents[1]


def nccl_built() -> bool:
    horovodrun = Path(sys.executable).with_name("horovodrun")
    done = subprocess.run([str(horovodrun), "--check-build"], capture_output=True, text=True)
    return any("[X] NCCL" in line for line in done.stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=65_536)
    args = parser.parse_args()
    if shutil.which("nvidia-smi") is None or not torch.cuda.is_available():
        print("no NVIDIA GPU visible to torch: skipped (this benchmark needs one)")
        return
    if not nccl_built():
        print("rebuilding Horovod with NCCL ...", flush=True)
        venv = Path(sys.executable).parents[1]
        subprocess.run(
            [sys.executable, "-m", "pip", "uninstall", "-y", "-q", "horovod"], check=True
        )
        subprocess.run(["bash", str(ROOT / ".ci" / "build_horovod.sh"), str(venv)], check=True)
    split = time_split(frame(args.rows), "ts")
    features, cats = [f"x{i}" for i in range(20)] + ["c0", "c1"], ["c0", "c1"]
    gpus = torch.cuda.device_count()
    print(
        f"{torch.cuda.get_device_name(0)} x{gpus}; {len(split.train):,} rows, batch "
        f"{args.batch_size} per GPU, {args.epochs} epochs"
    )
    for n in sorted({1, gpus}):
        params = TorchParams(
            backend="horovod",
            processes=n,
            device="cuda",
            epochs=args.epochs,
            batch_size=args.batch_size,
            hidden=[1024, 512, 256],
        )
        trained = train_torch(split.train, split.valid, features, cats, "y", params, seed=0)
        m = trained.metrics
        print(
            f"  {n} GPU(s): {m['samples_per_s']:14,.0f} samples/s, peak GPU memory "
            f"{m.get('gpu_peak_bytes', 0) / 2**30:.2f} GiB (rank 0), valid AUC {m['valid_auc']:.4f}"
        )


if __name__ == "__main__":
    main()
