"""Choosing the device of a job.

Snakemake's ``resources: gpu=1`` only counts GPUs; it does not say which one
a job may use. A job therefore takes a free slot: it locks
``<lock dir>/gpu<N>.lock`` for the first N that no other job holds, sets
``CUDA_VISIBLE_DEVICES=N`` before torch initialises CUDA, and keeps the lock
until the process ends (the operating system releases it even on a crash).

With no GPU the job runs on the CPU. When ``CUDA_VISIBLE_DEVICES`` is already
set (by SLURM, or by hand), it is respected and no lock is taken.

``autocast_dtype`` is the one definition of the precision the networks run
in on a device (training, validation and prediction all ask it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import ConfigError

_held_lock = None

# The precisions of the networks' forward passes (``autocast_dtype``).
PRECISIONS = ("auto", "float32", "float16", "bfloat16")


def count_gpus() -> int:
    """GPUs on this machine: HANDBONE_GPUS if set, else what nvidia-smi lists."""
    if "HANDBONE_GPUS" in os.environ:
        return int(os.environ["HANDBONE_GPUS"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def lock_dir() -> Path:
    return Path(os.environ.get("HANDBONE_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / "handbone-gpu-locks"))


def acquire_gpu_slot(wait_seconds: float = 3600.0) -> str | None:
    """Take a free GPU and make it the only visible one; None means the CPU.

    Must be called before torch touches CUDA. Waits for a slot when all GPUs
    are taken (a job started by hand beside a running workflow).
    """
    global _held_lock
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) not in (None, ""):
        return os.environ["CUDA_VISIBLE_DEVICES"]
    gpus = count_gpus()
    if gpus == 0:
        return None
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    while True:
        for gpu in range(gpus):
            handle = open(directory / f"gpu{gpu}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _held_lock = handle
            os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
            return str(gpu)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot in {directory} after {wait_seconds:.0f} s")
        time.sleep(5)


def torch_device(threads: int):
    """The torch device for this job, after taking a GPU slot."""
    acquire_gpu_slot()
    import torch

    torch.set_num_threads(max(1, threads))
    if torch.cuda.is_available():
        # Every job runs windows of one size (or a few, with TTA scales):
        # cuDNN's search for the fastest convolution per shape pays off.
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(device, precision: str = "auto"):
    """The dtype ``torch.autocast`` runs the networks' forward passes in on
    ``device`` (a torch.device or its name), or None: no autocast, float32.

    ``auto``: float16 on CUDA (the half precision a V100's tensor cores
    run; training pairs it with a GradScaler), float32 elsewhere, so the
    CPU computes exactly what it always did. ``float32`` never autocasts;
    ``float16`` and ``bfloat16`` autocast on any device (bfloat16 on the
    CPU runs the GPU's mixed-precision code path where there is no GPU).
    Only the forward passes change: probabilities are accumulated in float32.
    """
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "float16" if torch.device(device).type == "cuda" else "float32"
    return None if precision == "float32" else getattr(torch, precision)
