"""Averages LM snapshots (lm.SNAPSHOT_EVERY writes them) into one file in the lm.pt format, for
choosing among the end of a run, or averaging it, on a validation split before the eval split:

  /usr/bin/python3 models/training/research/snapshots.py --out RUN/avg/lm.pt \\
      RUN/snapshots/lm-13000.pt RUN/snapshots/lm-13500.pt RUN/snapshots/lm-14000.pt

A validation split is an eval-format split from other example indices, e.g.
`npm run world -- dataset --split eval --per-task 200 --start-index 100000 --out $D/val`
(eval indices 1,000,100,000 …; the eval split's are 1,000,000,000 … +199). `evaluate.py --eval
$D/val` then scores a candidate as it would the eval split, with the eval split left unseen.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import emu_tiny  # noqa: E402,F401  (first: picks OpenBLAS's kernels before torch loads it)
import torch  # noqa: E402


def average(files: list, out: str) -> None:
    states = [torch.load(f, map_location="cpu") for f in files]
    configs = {str(s["config"]) for s in states}
    if len(configs) != 1:
        raise SystemExit(f"snapshots of different LM configs: {sorted(configs)}")
    model = {}
    for k, v in states[0]["model"].items():
        if v.is_floating_point():
            model[k] = torch.stack([s["model"][k] for s in states]).mean(0)
        elif any(not torch.equal(v, s["model"][k]) for s in states):
            raise SystemExit(f"non-float tensor {k} differs between snapshots")
        else:
            model[k] = v
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save({"model": model, "config": states[0]["config"], "train_s": max(s["train_s"] for s in states),
                "averaged": [os.path.basename(f) for f in files]}, out)
    print(f"wrote {out}: mean of {len(files)} snapshots")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("files", nargs="+", help="lm.pt-format snapshots of one run")
    a = ap.parse_args()
    average(a.files, a.out)


if __name__ == "__main__":
    main()
