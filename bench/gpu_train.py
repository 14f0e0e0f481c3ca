"""GPU benchmark of the PyTorch trainer (the tabular MLP, `tasks.training.torch_trainer`).

What runs depends on the GPUs torch sees:
- one GPU: the trainer in process (`processes=1`: no launcher, no Horovod, no NCCL) with
  `device=cuda` against the same trainer with `device=cpu` (on every core: the trainer's
  default for one process), on the same rows with the same batch size, epochs and model:
  samples/s of each and their ratio;
- n >= 2 GPUs: `device=cuda` at 1 GPU (in process, as above) and at n GPUs (`processes=n`:
  `horovodrun -np n`, allreduce over NCCL; Horovod is rebuilt with NCCL first if its build
  lacks it, via `.ci/build_horovod.sh`): samples/s of each and the scaling efficiency
  (samples/s at n / (n x samples/s at 1));
- no GPU: prints that it skipped and exits 0 (CI never has one).
Samples/s are measured inside the trainer over the training epochs; peak GPU memory is rank
0's. The configurations alternate, median of N each.

    python -m bench.gpu_train [--rows 2000000 --epochs 3 --batch-size 65536 --repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from bench.results import add_json_arg, write_json
from bench.train import CATEGORICAL, FEATURES, frame
from tasks.progress import progress
from tasks.training.torch_trainer import TorchParams, train_torch
from tasks.training.training_set import Split, time_split

ROOT = Path(__file__).resolve().parents[1]


def nccl_built() -> bool:
    horovodrun = Path(sys.executable).with_name("horovodrun")
    done = subprocess.run([str(horovodrun), "--check-build"], capture_output=True, text=True)
    return any("[X] NCCL" in line for line in done.stdout.splitlines())


def ensure_nccl() -> None:
    if nccl_built():
        return
    print("rebuilding Horovod with NCCL ...", flush=True)
    venv = Path(sys.executable).parents[1]
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "horovod"], check=True)
    subprocess.run(["bash", str(ROOT / ".ci" / "build_horovod.sh"), str(venv)], check=True)


def train_once(split: Split, args: argparse.Namespace, device: str, n: int) -> dict[str, float]:
    params = TorchParams(
        backend="horovod",
        processes=n,
        device=device,  # type: ignore[arg-type]
        epochs=args.epochs,
        batch_size=args.batch_size,
        hidden=[1024, 512, 256],
    )
    trained = train_torch(split.train, split.valid, FEATURES, CATEGORICAL, "y", params, seed=0)
    return trained.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_arg(parser, "gpu_train")
    args = parser.parse_args()
    if shutil.which("nvidia-smi") is None or not torch.cuda.is_available():
        print("no NVIDIA GPU visible to torch: skipped (this benchmark needs one)")
        write_json(args.json, "gpu_train", args, {"skipped": "no NVIDIA GPU visible to torch"})
        return
    gpus = torch.cuda.device_count()
    if gpus >= 2:
        ensure_nccl()
    split = time_split(frame(args.rows), "ts")
    if gpus == 1:
        configs = {"cuda, 1 GPU, in process": ("cuda", 1), "cpu, in process": ("cpu", 1)}
    else:
        configs = {
            "cuda, 1 GPU, in process": ("cuda", 1),
            f"cuda, {gpus} GPUs, horovodrun + NCCL": ("cuda", gpus),
        }
    print(
        f"{torch.cuda.get_device_name(0)} x{gpus}; {len(split.train):,} rows, batch "
        f"{args.batch_size} per process, {args.epochs} epochs, MLP 1024-512-256, "
        f"configurations alternating, median of {args.repeats}:"
    )
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    with progress("GPU training runs", args.repeats * len(configs)) as bar:
        for _ in range(args.repeats):
            for name, (device, n) in configs.items():
                runs[name].append(train_once(split, args, device, n))
                bar.advance()
    sps = {name: statistics.median(m["samples_per_s"] for m in ms) for name, ms in runs.items()}
    for name, ms in runs.items():
        peak = max(m["gpu_peak_bytes"] for m in ms) / 2**30
        memory = f", peak GPU memory {peak:.2f} GiB (rank 0)" if peak else ""
        print(f"  {name:>36}: {sps[name]:14,.0f} samples/s{memory}")
    one, other = sps["cuda, 1 GPU, in process"], sps[list(configs)[1]]
    figures: dict[str, object] = {
        "gpus": gpus,
        "device_name": torch.cuda.get_device_name(0),
        "training_rows": len(split.train),
        "runs": runs,
        "median_samples_per_s": sps,
    }
    if gpus == 1:
        print(
            f"  one GPU: no Horovod, no NCCL; cuda / cpu: {one / other:.1f}x "
            "(scaling needs two or more GPUs)"
        )
        figures["cuda_over_cpu"] = one / other
    else:
        print(f"  scaling efficiency 1 -> {gpus} GPUs: {other / (gpus * one):.2f}")
        figures["scaling_efficiency"] = other / (gpus * one)
    write_json(args.json, "gpu_train", args, figures)


if __name__ == "__main__":
    main()
