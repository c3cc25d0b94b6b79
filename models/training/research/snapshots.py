"""Averages LM snapshots (lm.SNAPSHOT_EVERY writes them) into one file in the lm.pt format, for
choosing among the end of a run, or averaging it, on a validation split before the eval split:

  /usr/bin/python3 models/training/research/snapshots.py --out RUN/avg/lm.pt \\
      RUN/snapshots/lm-13000.pt RUN/snapshots/lm-13500.pt RUN/snapshots/lm-14000.pt

A validation split is an eval-format split from other example indices, e.g.
`npm run world -- dataset --split eval --per-task 200 --start-index 100000 --out $D/val`
(eval indices 1,000,100,000 …; the eval split's are 1,000,000,000 … +199). `evaluate.py --eval
$D/val` then scores a candidate as it would the eval split, with the eval split left unseen.

Few-shot differences between candidates are a point or two, below what 200 episodes per row can
separate (standard error ~2.5 points). `--score` measures them on a larger split instead: each file,
and with `--average K,…` the mean of the last K files too, teacher-forced as lm.probe_fewshot reads
the query label (which equals the scorer's verdict on these rows), per shot count and attribute:

  npm run world -- dataset --split eval --per-task 1000 --start-index 200000 --out $D/val1k
  EMU_TRAIN_DIR=RUN /usr/bin/python3 models/training/train.py embed --data $D/val1k --threads 1
  /usr/bin/python3 models/training/research/snapshots.py --score $D/val1k --average 3,5 \
      RUN/lm.pt RUN/snapshots/lm-*.pt
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import emu_tiny  # noqa: E402,F401  (first: picks OpenBLAS's kernels before torch loads it)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from emu_tiny import lm  # noqa: E402


def average(files: list, out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    lm.save_state(lm.mean_state(files), out)
    print(f"wrote {out}: mean of {len(files)} snapshots")


def step_of(file: str) -> int:
    """lm-<step>.pt's step (files without one sort first)."""
    stem = os.path.basename(file).rsplit(".", 1)[0]
    return int(stem.split("-")[-1]) if stem.split("-")[-1].isdigit() else -1


@torch.no_grad()
def score(split_dir: str, candidates: dict, chunk: int = 100) -> None:
    """Prints each candidate's ({name: lm.pt-format state}) teacher-forced few-shot accuracy on the
    embedded eval-format split: per shot count, and for 2 and 4 shots per attribute."""
    from emu_tiny.data import Split
    from emu_tiny.modules import CausalLM, LMConfig

    lm.FEWSHOT_ATTR_ADAPT = 0  # the Batcher's training draw by attribute: nothing to draw here
    split = Split(split_dir)
    batcher = lm.Batcher(split, np.load(os.path.join(split_dir, "embeds.npy")), ["fewshot"], 0)
    d = batcher.data["fewshot"]
    by_shots: dict = {}
    for i in range(d.n):
        by_shots.setdefault(len(d.images[i]) - 1, []).append(i)
    for name, state in candidates.items():
        model = CausalLM(LMConfig(**state["config"]))
        model.load_state_dict(state["model"])
        hits: dict = {}
        for k, rows in sorted(by_shots.items()):
            for at in range(0, len(rows), chunk):
                part = rows[at:at + chunk]
                res = lm.probe_fewshot(model, batcher, {k: part})
                groups = [(f"{k}shot", part)] + [(f"{k}shot_{a}", [i for i in part if d.attr[i] == a]) for a in lm.FEWSHOT_ATTRS]
                for key, members in groups:
                    if key in res:
                        h, n = hits.get(key, (0.0, 0))
                        hits[key] = (h + res[key] * len(members), n + len(members))
        print(f"{name}: " + "  ".join(f"{key} {100 * h / n:.1f}% ({n})" for key, (h, n) in hits.items()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the files' mean here")
    ap.add_argument("--score", metavar="SPLIT", help="an embedded eval-format split: score the files (and --average's means) on it")
    ap.add_argument("--average", default="", help="with --score: also the mean of the last K files by step, for each K (e.g. 3,5)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("files", nargs="+", help="lm.pt-format snapshots of one run")
    a = ap.parse_args()
    if bool(a.out) == bool(a.score):
        ap.error("give one of --out or --score")
    torch.set_num_threads(a.threads)
    if a.out:
        average(a.files, a.out)
        return
    files = sorted(a.files, key=step_of)
    candidates = {f: torch.load(f, map_location="cpu") for f in files}
    for k in (int(x) for x in a.average.split(",") if x):
        if not 2 <= k <= len(files):
            ap.error(f"--average {k}: between 2 and the {len(files)} files given")
        candidates[f"mean of last {k} ({os.path.basename(files[-k])}…)"] = lm.mean_state(files[-k:])
    score(a.score, candidates)


if __name__ == "__main__":
    main()
