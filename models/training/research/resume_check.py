"""Checks that an interrupted LM stage resumes exactly: 5 recall + 25 mixture steps (video at half
the mixture, rollouts from step 8, the auxiliary few-shot loss on, a checkpoint after every step),
once uninterrupted and once interrupted after step 18 and resumed, in two scratch run dirs; prints
the largest difference between the two final LMs' weights (0 on one thread).
`--procs 2` checks data-parallel training the same way (two processes, a checkpoint after every
step). `--without-gens` leaves the stage's own batch generators out of the checkpoint (the behaviour
before 2026-11-28): the check must then print a difference.

  OPENBLAS_NUM_THREADS=1 /usr/bin/python3 models/training/research/resume_check.py [--procs N] [--without-gens]

Needs the training split with its embeds.npy (`train.py embed`) under $EMU_TRAIN_DIR/data/train."""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import emu_tiny  # noqa: E402,F401  (first: picks OpenBLAS's kernels before numpy loads it)
import torch  # noqa: E402

import emu_tiny.lm as L  # noqa: E402
from emu_tiny.common import Checkpoint, path, set_threads  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--without-gens", action="store_true")
    ap.add_argument("--procs", type=int, default=1)
    a = ap.parse_args()
    data = path("data", "train")
    set_threads(1)

    class EveryStep(Checkpoint):
        def __init__(self, stage, gens=(), every_s=0.0):
            super().__init__(stage, every_s=0.0, gens=() if a.without_gens else gens)

    L.Checkpoint = EveryStep
    L.DP_CHECKPOINT_EVERY = 1
    L.RECALL_STEPS, L.ROLLOUT_FROM, L.FEWSHOT_ATTR_LOSS = 5, 8, 1.0
    L.MIXTURE = dict(L.MIXTURE, video=0.5)
    forward = L.forward

    def run(run_dir: str, stop_after: int = 0) -> torch.Tensor:
        os.environ["EMU_TRAIN_DIR"] = run_dir
        steps = [0]

        def counted(*args, **kw):  # train_lm's training forward is the only call with attr_head
            if "attr_head" in kw:
                steps[0] += 1
                if stop_after and steps[0] > stop_after:
                    raise KeyboardInterrupt
            return forward(*args, **kw)

        L.forward = counted
        L.train_lm(data, 25, 16, 1234, procs=a.procs)
        return torch.cat([v.flatten().float() for v in torch.load(os.path.join(run_dir, "lm.pt"))["model"].values()])

    root = tempfile.mkdtemp(prefix="resume-check-")
    try:
        whole = run(os.path.join(root, "whole"))
        again = run(os.path.join(root, "again"))
        print(f"max |uninterrupted - uninterrupted again| = {float((whole - again).abs().max()):.3g}")
        try:
            run(os.path.join(root, "split"), stop_after=18)
        except (KeyboardInterrupt, Exception) as e:  # data parallel: the process's exception, re-raised by torch.multiprocessing
            if a.procs == 1 and not isinstance(e, KeyboardInterrupt):
                raise
            print("interrupted; checkpoint at step", torch.load(os.path.join(root, "split", "ckpt", "lm.pt"))["step"])
        resumed = run(os.path.join(root, "split"))
        print(f"max |uninterrupted - resumed| = {float((whole - resumed).abs().max()):.3g}")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
