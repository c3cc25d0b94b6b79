"""Few-shot diagnostic (research; not part of the rebuild): trains the emu2-tiny LM on few-shot
episodes only and prints the held-out first-token accuracy per shot count, so the visual tokens
and the episode layout can be varied one at a time. The model card's "What falls short" cites it.

  icl_prep.py $EMU_TRAIN_DIR/data/train DATA      # 80k episodes + their 16k images' embeddings (35 MB)
  icl_diagnostic.py DATA VARIANT SECONDS [LR]

VARIANT: real (the frozen encoder's tokens) | white (standardised per dimension) | meanbc (+4 × the
image's mean token) | ideal (every token = random projection of shape+colour+size, + N(0, 0.1): the
calibration's tokens) | ideal_distract (+ position and background) | ideal_local (the projection in
the object's own token only). Environment: FORMAT=calib drops <s>, [IMG] and [/IMG] (the
calibration's bare layout); VIS_SCALE multiplies the visual inputs; EMB_STD re-initialises the token
embeddings; LAYERS (default 2) sets the LM's depth; SUMMARY=attn adds the image summary at `[/IMG]`
(modules.ImageSummary); REPEAT sets lm.REPEAT_SHARE (exact-copy queries); PROBE_EVERY (default 1000) steps between probes; WARMUP first trains that many steps of text-only
associative recall (lm.RecallEpisodes). Seeds are fixed (0). Runs on CUDA when
present: 11-14k steps in 5-7 minutes on an H100, several variants side by side."""
import sys, time, json, os
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import emu_tiny  # first: picks OpenBLAS's kernels before numpy loads it
import numpy as np, torch
from emu_tiny import lm as L
from emu_tiny.modules import CausalLM, LMConfig
import gzip

class MiniSplit:
    def __init__(self, d):
        self.meta = json.load(open(f"{d}/meta.json")); self.special = self.meta["special_ids"]
        self.tokens_per_image = self.meta["tokens_per_image"]; self.d = d
    def examples(self, task):
        return [json.loads(l) for l in gzip.open(f"{self.d}/{task}.jsonl.gz", "rt")]

data, variant, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
split = MiniSplit(data)
emb = np.load(f"{data}/embeds.npy").astype(np.float32)           # [N,16,64]
desc = [json.loads(l) for l in open(f"{data}/images.jsonl")]
n, T, D = emb.shape
rng = np.random.default_rng(0)
if variant == "white":
    flat = emb.reshape(-1, D); mu, sd = flat.mean(0), flat.std(0) + 1e-4
    emb = (emb - mu) / sd
elif variant in ("ideal", "ideal_distract", "ideal_local"):
    P = rng.standard_normal((3 + 6 + 2 + 9 + 2, D)).astype(np.float32) / np.sqrt(4)
    out = np.zeros_like(emb)
    for i, d in enumerate(desc):
        o = d["objects"][0]
        v = P[o["shape"]] + P[3 + o["color"]] + P[9 + o["size"]]
        if variant != "ideal":
            v = v + P[11 + o["cell"]] + P[20 + d["bg"]]
        if variant == "ideal_local":
            out[i] = P[20 + d["bg"]] + 0.1 * rng.standard_normal((T, D))
            gx, gy = min(3, int(o["x"] * 4)), min(3, int(o["y"] * 4))
            out[i, gy * 4 + gx] = v
        else:
            out[i] = v[None] + 0.1 * rng.standard_normal((T, D))
    emb = out
elif variant == "meanbc":
    emb = emb + 4 * emb.mean(1, keepdims=True)
emb = emb * float(os.environ.get("VIS_SCALE", 1))
b = L.Batcher(split, emb, ["fewshot"], 0)
if os.environ.get("FORMAT") == "calib":
    # The calibration's layout: [16 vis][label][.] ... [16 vis] -> label (no <s>, [IMG], [/IMG]).
    d = b.data["fewshot"]; drop = {1, 4, 5}
    for i in range(d.n):
        ids = d.ids[i]; keep = np.array([t not in drop for t in ids]); shift = np.cumsum(~keep)
        newpos = np.arange(len(ids)) - shift
        d.loss[i] = [[int(newpos[s0]), int(newpos[e0 - 1]) + 1] for s0, e0 in d.loss[i]]
        d.prompt[i] = int(newpos[d.prompt[i]]); d.ids[i] = ids[keep]

L.HOLDOUT = 1000
L.REPEAT_SHARE = float(os.environ.get("REPEAT", 0))
cfg = LMConfig(vocab=split.meta["vocab_size"], dim=D, layers=int(os.environ.get("LAYERS", 2)),
               image_summary=os.environ.get("SUMMARY", ""))
model = CausalLM(cfg)
if os.environ.get("EMB_STD"): model.embed.weight.data.normal_(0, float(os.environ["EMB_STD"]))
model = model.to(dev)
z = lambda bs: [(torch.zeros(bs, cfg.heads, 0, cfg.head_dim, device=dev),) * 2 for _ in range(cfg.layers)]
model.empty_past = z
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
fd = b.data["fewshot"]
shots = {k: [] for k in (1, 2, 4)}
for i in range(fd.n - 1000, fd.n):
    k = len(fd.images[i]) - 1
    if k in shots and len(shots[k]) < 300: shots[k].append(i)
def cuda(bt): return {k: v.to(dev) for k, v in bt.items()}
def probe():
    model.eval(); res = {}
    with torch.no_grad():
        for k, rows in shots.items():
            bt = cuda(b.build("fewshot", rows, augment=False)); _, lg = L.forward(model, bt, augment=False)
            res[k] = round(np.mean([int(lg[r, fd.prompt[i] - 1].argmax()) == int(fd.ids[i][fd.prompt[i]]) for r, i in enumerate(rows)]), 3)
    model.train(); return res
t0 = time.time(); step = 0
warm = int(os.environ.get("WARMUP", 0))
if warm:
    rec = L.RecallEpisodes(split, fd, np.random.default_rng(1), D)
    for ws in range(warm):
        for g in opt.param_groups: g["lr"] = lr * min(1, (ws + 1) / 300)
        out, _ = L.forward(model, cuda(rec.sample(64)))
        opt.zero_grad(); out["ce"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
        if (ws + 1) % 250 == 0:
            print(f"warmup step {ws + 1} t={time.time()-t0:.0f}s loss={out['ce'].item():.3f} recall={L.probe_recall(model, rec, cuda):.3f}", flush=True)
    print(f"after warmup probe={probe()}", flush=True)
while time.time() - t0 < seconds:
    for g in opt.param_groups: g["lr"] = lr * min(1, (step + 1) / 300)
    out, _ = L.forward(model, cuda(b.sample("fewshot", 64)))
    loss = out["ce"]; opt.zero_grad(); loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); step += 1
    if step % int(os.environ.get("PROBE_EVERY", 1000)) == 0:
        print(f"{variant} {os.environ.get('TAG','')} lr={lr} step {step} t={time.time()-t0:.0f}s loss={loss.item():.3f} probe={probe()}", flush=True)
print(f"{variant} {os.environ.get('TAG','')} FINAL step {step} probe={probe()}", flush=True)
