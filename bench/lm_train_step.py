"""emu2-tiny's LM training step, measured in one run on the same batches two or more ways:

  --compare pack     packed (lm.PACK: everything but attention on the real tokens) against the padded
                     baseline, one core, as the LM stage trains (the default);
  --compare precision  the packed step on one core in fp32 (the baseline) against lm.AUTOCAST "on"
                     (bf16 autocast: worth it only where the CPU has AMX or AVX-512 BF16; the
                     header line says whether this one has);
  --compare procs    the packed step on one core (the baseline) against data-parallel training on
                     two (train.py lm --procs 2: two processes, half of each batch each, their
                     gradients averaged by a gloo all-reduce): the same batches, timed on process 0
                     from its forward to its optimiser step, all-reduce and waiting included.
                     Run it with the machine otherwise idle;
  --compare threads  the packed step on one core (one torch thread, one OpenBLAS thread: the
                     baseline) against two cores, given either to OpenBLAS or to torch. Run it with
                     the machine otherwise idle: it says what the LM stage would gain from the second core.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/lm_train_step.py [--compare pack|precision|procs|threads] [--data DIR] [--batches N]

Needs a training split written by the world (`models/training/rebuild.sh` writes it to
$EMU_TRAIN_DIR/data/train, default ~/.cache/emu2-tiny) and, if present, its embeddings (embeds.npy;
random ones otherwise: the timing does not depend on their values). Prints per task the padding share
(not with --compare procs) and the median seconds per step (forward, backward, optimiser) each way,
then the mixture-weighted ratios against the baseline: the LM stage's expected speed-up, rollouts aside."""
import argparse
import ctypes
import json
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


def step(model, opt, batch, procs: int = 1) -> float:
    t = time.perf_counter()
    torch.manual_seed(0)
    with lm.autocast():
        out, _ = lm.forward(model, batch)
    loss = out.get("ce", 0.0) + out.get("reg", 0.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if procs > 1:
        lm.average_grads(list(model.parameters()), procs)
    opt.step()
    return time.perf_counter() - t


def data_parallel(rank: int, procs: int, port: int, model, batcher, plan, out: str) -> None:
    """One process of --compare procs: its share of every planned batch, timed; process 0 writes the
    per-task medians to `out`."""
    import torch.distributed as dist
    lm.join_group(rank, procs, port)
    torch.set_num_threads(1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    med = {}
    for task, batches in plan.items():
        times = []
        for i, rows in enumerate(batches):
            share = len(rows) // procs
            b = batcher.build(task, rows[rank * share:(rank + 1) * share], augment=False)
            dist.barrier()
            s = step(model, opt, b, procs)
            if i:
                times.append(s)
        med[task] = float(np.median(times))
    if rank == 0:
        with open(out, "w") as f:
            json.dump(med, f)
    dist.destroy_process_group()


def compare_procs(model, batcher, batches: int, procs: int = 2) -> None:
    """--compare procs: the same batches on one process, then split among `procs`."""
    import tempfile
    import torch.multiprocessing as mp
    plan = {task: [batcher.rng.integers(0, batcher.data[task].n - lm.HOLDOUT, min(64, lm.BATCH_CAP.get(task, 64)))
                   for _ in range(batches + 1)] for task in lm.MIXTURE}
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    one = {}
    for task, rows_list in plan.items():
        times = [step(model, opt, batcher.build(task, rows, augment=False)) for rows in rows_list]
        one[task] = float(np.median(times[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "dp.json")
        mp.start_processes(data_parallel, args=(procs, lm.free_port(), model, batcher, plan, out), nprocs=procs, start_method="fork")
        with open(out) as f:
            many = json.load(f)
    name = f"{procs} procs"
    print(f"{'task':9s} {'1 proc s':>9s} {name + ' s':>9s} {'÷ ' + name:>10s}")
    for task in plan:
        print(f"{task:9s} {one[task]:9.3f} {many[task]:9.3f} {one[task] / many[task]:9.2f}×")
    t1 = sum(w * one[t] for t, w in lm.MIXTURE.items())
    tn = sum(w * many[t] for t, w in lm.MIXTURE.items())
    print(f"mixture-weighted s/step: 1 proc {t1:.3f}, {name} {tn:.3f}; speed-up against 1 proc: {name} {t1 / tn:.2f}×")


def openblas_threads():
    """OpenBLAS's `openblas_set_num_threads` from the library torch loaded (None if it is not OpenBLAS)."""
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "libopenblas" in line.split()[-1]}
    for lib in sorted(libs):
        fn = getattr(ctypes.CDLL(lib), "openblas_set_num_threads", None)
        if fn is not None:
            return fn
    return None


def ways(compare: str):
    """(name, setup) for each way, the baseline first; setup() readies torch for the timed step."""
    if compare == "pack":
        def packed(on: bool):
            def setup():
                lm.PACK = on
            return setup
        return [("padded", packed(False)), ("packed", packed(True))]
    if compare == "precision":
        def precision(mode: str):
            def setup():
                lm.PACK, lm.AUTOCAST = True, mode
            return setup
        return [("fp32", precision("off")), ("bf16", precision("on"))]
    blas = openblas_threads()
    if blas is None:
        raise SystemExit("--compare threads needs torch linked to OpenBLAS (Debian's python3-torch with libopenblas0-pthread)")

    def cores(torch_n: int, blas_n: int):
        def setup():
            lm.PACK = True
            torch.set_num_threads(torch_n)
            blas(blas_n)
        return setup
    return [("1 core", cores(1, 1)), ("2 BLAS", cores(1, 2)), ("2 torch", cores(2, 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", choices=["pack", "precision", "procs", "threads"], default="pack")
    ap.add_argument("--data", default=path("data", "train"))
    ap.add_argument("--batches", type=int, default=12, help="batches per task (each timed every way)")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.data, "meta.json")):
        raise SystemExit(f"no training split at {a.data}: write one with `npm run world -- dataset --split train --out {a.data}` "
                         "(or run models/training/rebuild.sh), or pass --data")
    torch.set_num_threads(1)
    if a.compare == "precision":
        print(f"this CPU multiplies bf16 natively (AMX or AVX-512 BF16): {'yes' if lm.bf16_native() else 'no'}")
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
    # lr 0: every way sees the same weights throughout, so they all do exactly the same work.
    if a.compare == "procs":
        compare_procs(model, batcher, a.batches)
        return
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    named = ways(a.compare)
    names = [n for n, _ in named]
    print(f"{'task':9s} {'padding':>8s} " + " ".join(f"{n + ' s':>9s}" for n in names) +
          " " + " ".join(f"{'÷ ' + n:>10s}" for n in names[1:]))
    total = dict.fromkeys(names, 0.0)
    for task, w in lm.MIXTURE.items():
        times = {n: [] for n in names}
        pad = []
        for i in range(a.batches + 1):
            b = batcher.sample(task, min(64, lm.BATCH_CAP.get(task, 64)))
            pad.append(1 - float(b["mask"].float().mean()))
            order = named[i % len(named):] + named[:i % len(named)]   # rotate which way runs first
            for n, setup in order:
                setup()
                s = step(model, opt, b)
                if i:                                   # the first batch warms up every way
                    times[n].append(s)
        med = {n: float(np.median(v)) for n, v in times.items()}
        for n in names:
            total[n] += w * med[n]
        base = med[names[0]]
        print(f"{task:9s} {np.mean(pad):8.0%} " + " ".join(f"{med[n]:9.3f}" for n in names) + " " +
              " ".join(f"{base / med[n]:9.2f}×" for n in names[1:]), flush=True)
    base = total[names[0]]
    print("mixture-weighted s/step: " + ", ".join(f"{n} {total[n]:.3f}" for n in names) + "; speed-up against " +
          names[0] + ": " + ", ".join(f"{n} {base / total[n]:.2f}×" for n in names[1:]))


if __name__ == "__main__":
    main()
