"""LM recipe research on an accelerator: trains several variants of stage 3 (the LM) side by side on
one GPU, on the same frozen encoder, and scores each on the eval split with a proxy of the world's
scorer. It chooses a recipe before the CPU rebuild; the package's LM is still trained by
rebuild.sh on the CPU, and its numbers come from evaluate.py and the world's scorer.

  # here, once the encoder has trained: pack what the GPU machine needs (~22 MB, xz)
  /usr/bin/python3 models/training/research/lm_sweep.py pack --out .sweep
  # on the GPU machine (its python3 holds PyTorch with CUDA), variants in priority order:
  python3 models/training/research/lm_sweep.py run --pack .sweep --out $OUT --deadline 480 \\
      'shipped:' 'bins:LENGTH_BINS=16' 'fsbins:LENGTH_BINS=16,BINNED_TASKS=fewshot' 'layers3:LAYERS=3,LENGTH_BINS=16,BINNED_TASKS=fewshot' 'shipped2:seed=1235' …

  # or one variant on this CPU (its own run dir; the split's embeds.npy from `train.py embed`):
  EMU_TRAIN_DIR=DIR /usr/bin/python3 models/training/research/lm_sweep.py child --device cpu \
      --threads 1 --data ~/.cache/emu2-tiny/data --spec 'ROLLOUT_FROM=0'

A variant is `name:key=value,…` (empty: the shipped recipe): a key in capitals sets that constant of emu_tiny.lm (`MIXTURE.video`
sets one task's weight, `TAIL_MIXTURE.video` its weight in the tail, `BATCH_CAP.video` its batch cap), `seed`, `steps`, `batch` and `procs` (data-parallel processes) set train_lm's arguments. Once every variant has run
1,000 steps, the last ones in the list are stopped while any would finish after --deadline less
--eval-margin seconds; the probe lines of every variant are echoed as they appear.

Sizing (seen 2026-11-27, H100 machine, 16 cores): six variants side by side ran ~25 steps/s each
(their first 1,000 steps ~30 steps/s), so a 12,500-step variant needs ~8.5 minutes and the proxy scoring
~1–2 more: two to four full variants fit one 10-minute call.
Seen 2026-11-28 (H100, FEWSHOT_ATTR_LOSS 1.0 or 0.3, 11,500-step variants with ROLLOUT_FROM=7200
and a video-heavy tail): ~34 steps/s each through recall with six side by side, 21–26 in the
mixture with five to three, but once rollouts start 15 steps/s with three and 12 alone (each
rollout is a free-running pass of small kernels), so the stopping rule's rates, measured before that, were
optimistic and no variant finished in 560 s. Start rollouts early, or give such variants a
whole call. At --deadline every variant still training is stopped and its snapshots
(lm.SNAPSHOT_EVERY) come back in its tar all the same.

The proxy score. Text: the greedy first token of the answer against the expected one (few-shot per
shot count, VQA, caption). Images: the regressed tokens and the target image's own encoder tokens
are read through the encoder's training heads (per-token presence, shape, colour, size; the scene's
background); an image counts when every token agrees, a video when all its frames do (`exact`).
Lenient columns: `_main`, the most confident token's shape and colour and its object's 3×3 cell;
`video_dir`, the direction of that object's motion from the first frame to the last. The direct
decoder renders the target's own tokens correctly in 95–100% of cases (model card, "oracle"), so
agreement with them is close to what the scorer measures, but it is not the scorer."""
import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import emu_tiny  # noqa: E402,F401  (first: picks OpenBLAS's kernels before numpy loads it)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from emu_tiny.common import path  # noqa: E402
from emu_tiny.encoder import embed_split  # noqa: E402
from emu_tiny.modules import EncoderConfig, EncoderHeads, VisualEncoder  # noqa: E402

# Each split's files (images.jsonl: the descriptions lm.FEWSHOT_ATTR_LOSS reads).
SPLITS = ("train", "eval")
SPLIT_FILES = ["meta.json", "images.u8", "images.jsonl", "caption.jsonl", "vqa.jsonl", "fewshot.jsonl",
               "t2i.jsonl", "subject.jsonl", "grounded.jsonl", "video.jsonl"]


def pack(out: str) -> None:
    """The train and eval splits (xz) and the encoder, with its training heads where the run has them."""
    os.makedirs(out, exist_ok=True)
    for split in SPLITS:
        for f in SPLIT_FILES:
            src = path("data", split, f)
            with open(src, "rb") as i, lzma.open(os.path.join(out, f"{split}.{f}.xz"), "wb", preset=1) as o:
                shutil.copyfileobj(i, o, 1 << 22)
    if os.path.exists(path("ckpt", "encoder.pt")):  # the encoder stage's checkpoint: with its training heads
        ck = torch.load(path("ckpt", "encoder.pt"), map_location="cpu")
        torch.save({"encoder": ck["encoder"], "heads": ck["heads"], "config": ck["config"]}, os.path.join(out, "encoder.pt"))
    else:  # recovered from a package (research/import_package.py): no heads, so no proxy score
        shutil.copyfile(path("encoder.pt"), os.path.join(out, "encoder.pt"))
    print(f"packed into {out}: {sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 1e6:.1f} MB")


def unpack(pack_dir: str, root: str) -> None:
    for split in SPLITS:
        os.makedirs(os.path.join(root, split), exist_ok=True)
        for f in SPLIT_FILES:
            with lzma.open(os.path.join(pack_dir, f"{split}.{f}.xz"), "rb") as i, open(os.path.join(root, split, f), "wb") as o:
                shutil.copyfileobj(i, o, 1 << 22)


def load_encoder(file: str, device: str):
    e = torch.load(file, map_location="cpu")
    cfg = EncoderConfig(**e["config"])
    enc, heads = VisualEncoder(cfg), EncoderHeads(cfg)
    enc.load_state_dict(e["encoder"]); heads.load_state_dict(e["heads"])
    return enc.to(device).eval(), heads.to(device).eval()


def apply(spec: str):
    """`key=value,…` → (train_lm kwargs); sets emu_tiny.lm constants in place."""
    from emu_tiny import lm
    kw = {}
    for item in filter(None, spec.split(",")):
        k, v = item.split("=")
        if k in ("seed", "steps", "batch", "procs"):
            kw[k] = int(v)
        elif "." in k and isinstance(getattr(lm, k.split(".", 1)[0], None), dict):
            name, task = k.split(".", 1)
            # The dict's own value type (BATCH_CAP's int caps), float where it is empty (TAIL_MIXTURE).
            d = getattr(lm, name)
            setattr(lm, name, dict(d, **{task: type(next(iter(d.values()), 0.0))(float(v))}))
        elif hasattr(lm, k):
            setattr(lm, k, type(getattr(lm, k))(float(v)) if isinstance(getattr(lm, k), (int, float)) else v)
        else:
            raise SystemExit(f"unknown recipe key {k!r}")
    return kw


@torch.no_grad()
def decode_heads(heads, tokens):
    """tokens [B,N,D] → per token (present, shape, colour, size) [B,N,4] and background [B]."""
    pc, ps, _ = heads(tokens)
    attrs = torch.stack([(pc[..., 0] > 0).long(), pc[..., 1:4].argmax(-1), pc[..., 4:10].argmax(-1), pc[..., 10:12].argmax(-1)], -1)
    return attrs, ps[:, 0:2].argmax(-1)


def agree(heads, got, want):
    """Per image: every token's presence agrees, and on present tokens shape, colour and size."""
    a, bg_a = decode_heads(heads, got)
    b, bg_b = decode_heads(heads, want)
    present = b[..., 0] == 1
    ok_tok = (a[..., 0] == b[..., 0]) & (~present | (a[..., 1:] == b[..., 1:]).all(-1))
    return ok_tok.all(-1) & (bg_a == bg_b)


@torch.no_grad()
def main_object(heads, tokens):
    """tokens [B,N,D] → the most confident token's (shape, colour) [B,2] and object centre [B,2]
    (its region's centre plus the predicted offset, in image fractions)."""
    pc, _, _ = heads(tokens)
    k = pc[..., 0].argmax(-1)
    sel = pc[torch.arange(len(k)), k]
    g = int(round(tokens.shape[1] ** 0.5))
    centre = torch.stack([(k % g).float(), (k // g).float()], -1).add(0.5).div(g) + sel[:, 12:14]
    return torch.stack([sel[:, 1:4].argmax(-1), sel[:, 4:10].argmax(-1)], -1), centre


def direction(centres):
    """[B,F,2] → the dominant axis and sign of the first-to-last displacement, as 0–3."""
    d = centres[:, -1] - centres[:, 0]
    axis = d.abs().argmax(-1)
    return axis * 2 + (d[torch.arange(len(d)), axis] > 0).long()


@torch.no_grad()
def proxy_eval(lm_model, enc, heads, eval_dir: str) -> dict:
    """The proxy score on the eval split (see the module's docstring)."""
    from evaluate import Runner
    from emu_tiny.data import Split
    split = Split(eval_dir)
    run = Runner(type("Nets", (), {"encoder": enc, "lm": lm_model})(), split)
    res = {}
    for task in ("fewshot", "vqa", "caption"):
        rows = split.examples(task)
        hit = {}
        for s in range(0, len(rows), 64):
            chunk = rows[s:s + 64]
            seqs = [run.embed_prompt(r["ids"][: r["prompt"]], r["images"]) for r in chunk]
            for r, ids in zip(chunk, run.greedy(seqs, max_new=1)):
                key = f"fewshot{r['expect']['shots']}" if task == "fewshot" else task
                hit.setdefault(key, []).append(ids[0] == r["ids"][r["prompt"]])
        res.update({k: float(np.mean(v)) for k, v in hit.items()})
    for task in ("t2i", "subject", "grounded", "video"):
        rows = split.examples(task)
        oks = []
        for s in range(0, len(rows), 64):
            chunk = rows[s:s + 64]
            seqs = [run.embed_prompt(r["ids"][: r["prompt"]], [im for im, g in zip(r["images"], r["gen"]) if not g]) for r in chunk]
            frames = 8 if task == "video" else 1
            toks = run.regress(seqs, frames)
            want = torch.stack([run.embeds[torch.tensor([im for im, g in zip(r["images"], r["gen"]) if g][:frames])] for r in chunk])
            got, want = toks.reshape(-1, *toks.shape[2:]), want.reshape(-1, *want.shape[2:])
            ok = agree(heads, got, want).reshape(len(chunk), frames)
            (ga, gc), (wa, wc) = main_object(heads, got), main_object(heads, want)
            cell = lambda c: (c * 3).clamp(0, 2.999).long()  # noqa: E731  (the world's 3×3 grid)
            main_ok = ((ga == wa).all(-1) & (cell(gc) == cell(wc)).all(-1)).reshape(len(chunk), frames)
            oks.append(torch.stack([ok.all(1).float(), ok.float().mean(1), main_ok.float().mean(1),
                                    (direction(gc.reshape(len(chunk), frames, 2)) == direction(wc.reshape(len(chunk), frames, 2))).float()], 1))
        o = torch.cat(oks).mean(0).tolist()
        # exact: every token of every frame agrees; main: the main object's shape, colour and 3×3
        # cell; video also per frame and the direction of the main object's motion.
        res[task] = o[0]
        res[f"{task}_main"] = o[2]
        if task == "video":
            res.update(video_frames=o[1], video_dir=o[3])
    return res


def child(a) -> None:
    """One variant: train on --device, score on the CPU, write result.json and lm.pt in its run dir."""
    torch.set_num_threads(a.threads)
    from emu_tiny import lm
    kw = apply(a.spec)
    seed, steps, batch = kw.get("seed", 1234), kw.get("steps", 12500), kw.get("batch", 64)
    lm.train_lm(os.path.join(a.data, "train"), steps, batch, seed, device=a.device, procs=kw.get("procs", 1))
    state = torch.load(path("lm.pt"), map_location="cpu")
    # train_s: the stage's own training time, summed over resumes (this process may have resumed a checkpoint).
    res = {"train_s": round(state["train_s"]), "spec": a.spec}
    enc_file = os.path.join(a.pack, "encoder.pt")
    if "heads" in torch.load(enc_file, map_location="cpu"):
        model = lm.CausalLM(lm.LMConfig(**state["config"]))
        model.load_state_dict(state["model"])
        model.eval()
        enc, heads = load_encoder(enc_file, "cpu")
        t1 = time.time()
        res.update(proxy_eval(model, enc, heads, os.path.join(a.data, "eval")), eval_s=round(time.time() - t1))
    else:
        # An encoder recovered from a package (research/import_package.py) has no training heads:
        # no proxy score; the LM comes back for evaluate.py on a validation split.
        res["proxy"] = "none: no heads in " + enc_file
    with open(path("result.json"), "w") as f:
        json.dump(res, f)
    print("RESULT " + json.dumps(res), flush=True)


def last_lines(log_file: str, marker: str) -> list:
    try:
        with open(log_file) as f:
            return [ln.strip() for ln in f if marker in ln]
    except OSError:
        return []


def progress(log_file: str) -> int:
    try:
        with open(log_file) as f:
            steps = [int(ln.split("] step ")[1].split()[0]) for ln in f if "] step " in ln]
        return steps[-1] if steps else 0
    except OSError:
        return 0


def sweep(a) -> None:
    t_start = time.time()
    data = a.data or "/tmp/sweep-data"
    if not os.path.exists(os.path.join(data, "train", "embeds.npy")):  # else kept from an earlier run
        unpack(a.pack, data)
        embed_split(os.path.join(data, "train"), 4096, os.path.join(a.pack, "encoder.pt"), a.device)
        print(f"unpacked and embedded in {time.time() - t_start:.0f} s", flush=True)
    procs = {}
    for v in a.variants:
        name, spec = v.split(":", 1)
        run_dir = os.path.join(a.runs, name)
        os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
        env = dict(os.environ, EMU_TRAIN_DIR=run_dir, OMP_NUM_THREADS="2")
        cmd = [sys.executable, os.path.abspath(__file__), "child", "--pack", a.pack, "--data", data, "--device", a.device, "--threads", str(a.threads), "--spec", spec]
        out = open(os.path.join(run_dir, "child.out"), "w")
        procs[name] = (subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT), run_dir, spec)
    total = {n: apply_steps(spec) for n, (_, _, spec) in procs.items()}
    first, shown, last_print = {}, {n: 0 for n in procs}, 0.0
    while any(p.poll() is None for p, _, _ in procs.values()):
        time.sleep(5)
        el = time.time() - t_start
        done = {n: progress(os.path.join(d, "logs", "lm.log")) for n, (_, d, _) in procs.items()}
        for n, (_, d, _) in procs.items():
            if done[n] > 0 and n not in first:
                first[n] = (el, done[n])
            probes = last_lines(os.path.join(d, "logs", "lm.log"), "probe step")
            for ln in probes[shown[n]:]:
                print(f"{n}: {ln}", flush=True)
            shown[n] = len(probes)
        if el - last_print >= 60:
            last_print = el
            print(f"{el:5.0f}s " + " ".join(f"{n}={done[n]}/{total[n]}" for n in procs), flush=True)
        if el > a.deadline:  # whatever is still training stops; its snapshots still come back
            late = [n for n, (p, _, _) in procs.items() if p.poll() is None]
            for n in late:
                procs[n][0].kill()
                procs[n][0].wait()
            print(f"deadline {a.deadline:.0f} s: stopped " + ", ".join(f"{n} at {done[n]} steps" for n in late), flush=True)
            break
        # Each variant's own rate since it was first seen moving (once 1,000 steps past that): the
        # last in the list stop while any would finish after the deadline. Re-checked at every poll,
        # since the rates change as variants start, stop and reach their evaluation.
        alive = [n for n, (p, _, _) in procs.items() if p.poll() is None and done[n] < total[n] - 1]
        if any(n not in first or done[n] < first[n][1] + 1000 for n in alive):
            continue
        finish = {n: el + (total[n] - done[n]) * (el - first[n][0]) / (done[n] - first[n][1]) for n in alive}
        if len(alive) > 1 and max(finish.values()) > a.deadline - a.eval_margin:
            n = alive[-1]
            procs[n][0].kill()
            first = {k: (el, done[k]) for k in first}  # rates are measured afresh without it
            print(f"stopped {n} at {done[n]} steps: at these rates the last would finish at {max(finish.values()):.0f} s, "
                  f"after the deadline {a.deadline:.0f} s less {a.eval_margin:.0f} s for scoring", flush=True)
    results = {}
    os.makedirs(a.out, exist_ok=True)
    # One tar per variant (its lm.pt, log and snapshots): a 3-layer lm.pt is ~3 MB, and the device
    # tool brings back at most 8 files of 16 MiB each, 64 MiB in all.
    for n, (p, d, spec) in procs.items():
        rf = os.path.join(d, "result.json")
        if os.path.exists(rf):
            results[n] = json.load(open(rf))
        else:
            probes = last_lines(os.path.join(d, "logs", "lm.log"), "probe step")
            results[n] = {"spec": spec, "stopped": probes[-1] if probes else None,
                          "output": open(os.path.join(d, "child.out")).read()[-1500:]}
        # lm.pt whenever written (also when the deadline stopped its proxy scoring), and the
        # snapshots (lm.SNAPSHOT_EVERY) of a variant that set them.
        snaps = os.path.join(d, "snapshots")
        files = [(os.path.join(d, "lm.pt"), f"{n}.pt")]
        files += [(os.path.join(snaps, sn), f"{n}-{sn}") for sn in sorted(os.listdir(snaps))] if os.path.isdir(snaps) else []
        files = [(file, arcname) for file, arcname in files if os.path.exists(file)]
        if files:
            with tarfile.open(os.path.join(a.out, f"{n}.tar"), "w") as tar:
                for file, arcname in files + [(os.path.join(d, "logs", "lm.log"), f"{n}.log")]:
                    tar.add(file, arcname=arcname)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


def apply_steps(spec: str) -> int:
    from emu_tiny import lm
    kv = dict(item.split("=") for item in filter(None, spec.split(",")))
    return (int(kv.get("steps", 12500)) + int(float(kv.get("RECALL_STEPS", lm.RECALL_STEPS)))
            + int(float(kv.get("TAIL_STEPS", lm.TAIL_STEPS))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["pack", "run", "child"])
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--pack", default=".sweep")
    ap.add_argument("--out", default=".sweep")
    ap.add_argument("--data", default=None)
    ap.add_argument("--runs", default="/tmp/sweep-runs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--deadline", type=float, default=480.0, help="seconds from start by which every kept variant is scored")
    ap.add_argument("--eval-margin", type=float, default=60.0)
    ap.add_argument("--spec", default="")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per variant")
    a = ap.parse_intermixed_args()
    {"pack": lambda: pack(a.out), "run": lambda: sweep(a), "child": lambda: child(a)}[a.cmd]()


if __name__ == "__main__":
    main()
