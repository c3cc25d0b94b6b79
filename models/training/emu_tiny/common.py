"""Run-directory layout, checkpoints that resume, seeds, threads and logging shared by every stage."""
import json
import os
import random
import time
import numpy as np
import torch


def train_dir() -> str:
    return os.environ.get("EMU_TRAIN_DIR", os.path.expanduser("~/.cache/emu2-tiny"))


def path(*parts: str) -> str:
    p = os.path.join(train_dir(), *parts)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def set_threads(n: int) -> None:
    # Debian's torch links OpenBLAS, which spawns its own threads: oversubscription makes small
    # transformers 2× slower (reference/pytorch-onnx-here.md). OPENBLAS_NUM_THREADS is set by the caller.
    torch.set_num_threads(n)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Log:
    def __init__(self, stage: str):
        self.stage = stage
        self.t0 = time.time()
        self.file = open(path("logs", f"{stage}.log"), "a")

    def __call__(self, msg: str, **metrics) -> None:
        line = f"[{self.stage} {time.time() - self.t0:7.0f}s] {msg}"
        if metrics:
            line += " " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


class Checkpoint:
    """Saves {models, optimisers, step, elapsed} atomically every `every_s` seconds and at the end,
    so an interrupted stage resumes where it stopped."""

    def __init__(self, stage: str, every_s: float = 120.0):
        self.file = path("ckpt", f"{stage}.pt")
        self.every_s = every_s
        self.last = time.time()

    def load(self):
        if os.path.exists(self.file):
            return torch.load(self.file, map_location="cpu")
        return None

    def save(self, state: dict, force: bool = False) -> None:
        if not force and time.time() - self.last < self.every_s:
            return
        tmp = self.file + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.file)
        self.last = time.time()


def cosine_lr(step: int, total: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * t)))


def write_json(p: str, obj) -> None:
    with open(p, "w") as f:
        json.dump(obj, f, indent=1)
