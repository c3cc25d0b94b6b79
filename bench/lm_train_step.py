"""emu2-tiny's LM training step, packed (lm.PACK: everything but attention on the real tokens) against
the padded baseline, measured in the same run on the same batches.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/lm_train_step.py [--data DIR] [--batches N]

Needs a training split written by the world (`models/training/rebuild.sh` writes it to
$EMU_TRAIN_DIR/data/train, default ~/.cache/emu2-tiny) and, if present, its embeddings (embeds.npy;
random ones otherwise: the timing does not depend on their values). One torch thread, as the LM stage
trains. Prints per task the padding share and seconds per step (forward, backward, optimiser) both
ways, then the mixture-weighted ratio: the LM stage's expected speed-up, rollouts aside."""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models", "training"))

import emu_tiny  # noqa: E402,F401  (first: picks OpenBLAS's kernels before numpy loads it)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from emu_tiny import lm  # noqa: E402
from emu_tiny.common import path  # noqa: E402
from emu_tiny.data import Split  # noqa: E402
from emu_tiny.modules import CausalLM, LMConfig  # noqa: E402


def step(model, opt, batch, pack: bool) -> float:
    lm.PACK = pack
    t = time.perf_counter()
    torch.manual_seed(0)
    out, _ = lm.forward(model, batch)
    loss = out.get("ce", 0.0) + out.get("reg", 0.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=path("data", "train"))
    ap.add_argument("--batches", type=int, default=12, help="batches per task (each timed both ways)")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.data, "meta.json")):
        raise SystemExit(f"no training split at {a.data}: write one with `npm run world -- dataset --split train --out {a.data}` "
                         "(or run models/training/rebuild.sh), or pass --data")
    torch.set_num_threads(1)
    split = Split(a.data)
    emb_file = os.path.join(a.data, "embeds.npy")
    if os.path.exists(emb_file):
        embeds = np.ascontiguousarray(np.load(emb_file, mmap_mode="r"))
    else:
        shape = (len(split.images), split.tokens_per_image, LMConfig.dim)
        embeds = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    batcher = lm.Batcher(split, embeds, list(lm.MIXTURE), 0)
    cfg = LMConfig(vocab=split.meta["vocab_size"], dim=embeds.shape[2], image_summary=lm.IMAGE_SUMMARY, layers=lm.LAYERS)
    model = CausalLM(cfg)
    # lr 0: both ways see the same weights throughout, so they do exactly the same work.
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    print(f"{'task':9s} {'padding':>8s} {'padded s':>9s} {'packed s':>9s} {'speed-up':>9s}")
    total = {True: 0.0, False: 0.0}
    for task, w in lm.MIXTURE.items():
        times = {True: [], False: []}
        pad = []
        for i in range(a.batches + 1):
            b = batcher.sample(task, min(64, lm.BATCH_CAP.get(task, 64)))
            pad.append(1 - float(b["mask"].float().mean()))
            for pack in ((True, False) if i % 2 else (False, True)):
                s = step(model, opt, b, pack)
                if i:                                   # the first batch warms up both paths
                    times[pack].append(s)
        med = {k: float(np.median(v)) for k, v in times.items()}
        for k in total:
            total[k] += w * med[k]
        print(f"{task:9s} {np.mean(pad):8.0%} {med[False]:9.3f} {med[True]:9.3f} {med[False] / med[True]:8.2f}×", flush=True)
    print(f"mixture-weighted: padded {total[False]:.3f} s/step, packed {total[True]:.3f} s/step, "
          f"speed-up {total[False] / total[True]:.2f}×")


if __name__ == "__main__":
    main()
