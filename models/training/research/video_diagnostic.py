"""Where video generation goes wrong: the eval split's videos regressed three ways by the trained LM
and rendered by the direct decoder, each written as an eval-output folder for the world's scorer.

  free      as inference does it (lm.free_run): every frame from the LM's own earlier frames
  tf-frame  each frame free-running within itself, after the target's true earlier frames
  tf-token  every token from the true tokens before it (one teacher-forced pass)

  EMU_TRAIN_DIR=DIR /usr/bin/python3 models/training/research/video_diagnostic.py \\
      --eval ~/.cache/emu2-tiny/data/eval --out /tmp/vdiag
  npm run -s world -- score /tmp/vdiag/tf-frame        # the direction row, per mode

DIR holds encoder.pt, autoencoder.pt, direct.pt, lm.pt (and a unet.pt, unused here). It also prints,
per mode and frame, how often the main object's 3×3 cell matches the target's and its mean centre
error (image fractions); the object is the non-background pixels' centroid, a rougher reading than
the world's checker.

`--prefix-tokens 0,1,4,5,8` also asks where the first frame of each horizontal clip lands when its
first m tokens are the target's and the rest free-running: per direction and m, how many first
frames sit in the left / middle / right third of the image (or show no object). It finds the token
at which the LM decides where a clip starts (model card, "What falls short → video")."""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import emu_tiny  # noqa: E402,F401  (first: picks OpenBLAS's kernels before numpy loads it)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from emu_tiny.data import Split  # noqa: E402
from emu_tiny.export import load_trained  # noqa: E402
from emu_tiny.lm import free_run  # noqa: E402
from emu_tiny.modules import DirectDecoder  # noqa: E402
from evaluate import Runner, to_u8  # noqa: E402


@torch.no_grad()
def regress_modes(run: Runner, rows, sp):
    """→ {mode: [V, F, N, D]} for the video rows."""
    free = run.regress([run.embed_prompt(r["ids"][: r["prompt"]], []) for r in rows], frames=len(rows[0]["images"]))
    tok, frame = [], []
    for r in rows:
        ids, imgs = r["ids"], r["images"]
        x = run.embed_prompt(ids, imgs)
        _, vis, _ = run.lm(x[None], torch.ones(1, len(ids), dtype=torch.long), torch.arange(len(ids))[None], run.lm.empty_past(1))
        slots = torch.tensor([i for i, t in enumerate(ids) if t == sp["[gIMG]"]])
        tok.append(vis[0, slots - 1].reshape(len(imgs), run.n_tok, -1))
        starts = [i for i, t in enumerate(ids) if t == sp["[IMG]"]]
        frame.append(torch.cat([run.regress([run.embed_prompt(ids[:s], imgs[:f])], 1)[0] for f, s in enumerate(starts)]))
    return {"free": free, "tf-frame": torch.stack(frame), "tf-token": torch.stack(tok)}


def centre(img: np.ndarray):
    """The centroid (x, y in image fractions) of the pixels unlike the corner colour, or None."""
    bg = img[0, 0].astype(np.int32)
    fg = np.abs(img.astype(np.int32) - bg).sum(-1) > 90
    if fg.sum() < 4:
        return None
    ys, xs = np.nonzero(fg)
    return (xs.mean() + 0.5) / img.shape[1], (ys.mean() + 0.5) / img.shape[0]


def cell(x: float, y: float) -> int:
    return min(2, int(y * 3)) * 3 + min(2, int(x * 3))


@torch.no_grad()
def first_frame_thirds(run: Runner, direct, rows, sp, want: str, m: int):
    """Where the first frame of each `want` clip lands with its first m tokens the target's and the
    rest regressed (lm.free_run over the remaining slots): counts of left / middle / right third and
    no object."""
    clips = [r for r in rows if r["expect"]["direction"] == want]
    if not clips:
        return [0, 0, 0, 0]
    prefixes = [run.embed_prompt(r["ids"][: r["ids"].index(sp["[gIMG]"]) + m], r["images"][:1]) for r in clips]
    rest = free_run(run.lm, prefixes, 1, run.n_tok - m, sp["[IMG]"], sp["[/IMG]"])[:, 0]
    true = run.embeds[torch.tensor([r["images"][0] for r in clips])][:, :m]
    thirds = [0, 0, 0, 0]
    for img in to_u8(direct(torch.cat([true, rest], 1))):
        c = centre(img)
        thirds[3 if c is None else cell(*c) % 3] += 1
    return thirds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=0, help="videos (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prefix-tokens", default="", help="e.g. 0,1,4,5,8: first-frame placement with m true tokens")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    split = Split(a.eval)
    nets = load_trained()
    run = Runner(nets, split)
    direct = DirectDecoder(nets.direct_head, nets.ae).eval()
    rows = split.examples("video")[: a.limit or None]
    targets = [json.loads(ln) for ln in open(os.path.join(a.eval, "images.jsonl"))]
    n_f = len(rows[0]["images"])  # frames per video
    for mode, toks in regress_modes(run, rows, split.special).items():
        d = os.path.join(a.out, mode)
        os.makedirs(d, exist_ok=True)
        with torch.no_grad():
            pics = to_u8(direct(toks.reshape(-1, toks.shape[2], toks.shape[3])))
        pics.tofile(os.path.join(d, "outputs.u8"))
        with open(os.path.join(d, "outputs.jsonl"), "w") as o:
            for i in range(len(rows)):
                o.write(json.dumps({"task": "video", "line": i, "frames": list(range(n_f * i, n_f * i + n_f))}) + "\n")
        shutil.copyfile(os.path.join(a.eval, "video.jsonl"), os.path.join(d, "video.jsonl"))
        frames = pics.reshape(len(rows), n_f, *pics.shape[1:])
        hit, err, seen = np.zeros(n_f), np.zeros(n_f), np.zeros(n_f)
        for v, r in enumerate(rows):
            for f in range(n_f):
                c = centre(frames[v, f])
                t = targets[r["images"][f]]["objects"][0]
                if c is None:
                    continue
                seen[f] += 1
                hit[f] += cell(*c) == cell(t["x"], t["y"])
                err[f] += np.hypot(c[0] - t["x"], c[1] - t["y"])
        print(f"{mode:8s} cell match % per frame: " + " ".join(f"{100 * h / len(rows):3.0f}" for h in hit)
              + " | centre error: " + " ".join(f"{e / max(s, 1):.2f}" for e, s in zip(err, seen))
              + f" | frames with no object: {int(n_f * len(rows) - seen.sum())}")
    if a.prefix_tokens:
        for want in ("right", "left"):
            for m in (int(v) for v in a.prefix_tokens.split(",")):
                t = first_frame_thirds(run, direct, rows, split.special, want, m)
                print(f"moving {want:5s} first {m:2d} tokens true: first frame in the left / middle / right third, none: {t}")


if __name__ == "__main__":
    main()
