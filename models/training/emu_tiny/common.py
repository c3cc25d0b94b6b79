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
    with the state of every random stream the stage draws from (torch's, CUDA's when in use,
    Python's, NumPy's global one and the stage's own `gens`), so an interrupted stage resumes where
    it stopped and goes on drawing the batches and noise an uninterrupted run would have drawn."""

    def __init__(self, stage: str, every_s: float = 120.0, gens: tuple = ()):
        self.file = path("ckpt", f"{stage}.pt")
        self.every_s = every_s
        self.gens = gens
        self.last = time.time()

    def load(self):
        """The saved state, with the random streams restored from it (a checkpoint written before
        they were saved leaves them as seeded); None if there is none."""
        if not os.path.exists(self.file):
            return None
        state = torch.load(self.file, map_location="cpu")
        if state.get("rng") is not None:
            self.restore_rng(state["rng"])
        return state

    def rng_state(self) -> dict:
        """Every random stream's state: torch's, CUDA's when in use, Python's, NumPy's, the `gens`."""
        return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                "python": random.getstate(), "numpy": np.random.get_state(), "gens": [g.bit_generator.state for g in self.gens]}

    def restore_rng(self, rng: dict) -> None:
        assert len(rng["gens"]) == len(self.gens), f"{self.file} saved {len(rng['gens'])} generators, the stage has {len(self.gens)}"
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        for g, st in zip(self.gens, rng["gens"]):
            g.bit_generator.state = st

    def save(self, state: dict, force: bool = False) -> None:
        if not force and time.time() - self.last < self.every_s:
            return
        tmp = self.file + ".tmp"
        torch.save({**state, "rng": self.rng_state()}, tmp)
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
