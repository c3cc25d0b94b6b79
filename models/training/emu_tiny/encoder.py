"""Stage 1: the visual encoder, trained with attribute/position/box heads and a pixel
reconstruction head so its 16 tokens carry everything the LM and the decoder need. Stage 1b embeds
every image of the training split with the frozen encoder (the LM and the decoder train on them)."""
import time
import numpy as np
import torch
import torch.nn.functional as F
from .common import Checkpoint, Log, cosine_lr, path, seed_all
from .data import Split, clip_normalise, encoder_targets, foreground_weight, to_unit
from .modules import EncoderConfig, EncoderHeads, VisualEncoder


def encoder_loss(heads, emb, cells, scene, x01):
    pc, ps, recon = heads(emb)
    present = cells[:, :, 0]
    loss = F.binary_cross_entropy_with_logits(pc[:, :, 0], present)
    m = present > 0
    if m.any():
        sel = pc[m]
        tgt = cells[m]
        loss = loss + 2 * F.cross_entropy(sel[:, 1:4], tgt[:, 1].long()) + F.cross_entropy(sel[:, 4:10], tgt[:, 2].long())
        loss = loss + F.cross_entropy(sel[:, 10:12], tgt[:, 3].long()) + 100 * F.mse_loss(sel[:, 12:14], tgt[:, 4:6])
    is_mask = scene[:, 1]
    loss = loss + F.binary_cross_entropy_with_logits(ps[:, 2], is_mask)
    nm = is_mask < 0.5
    if nm.any():
        loss = loss + F.cross_entropy(ps[nm][:, 0:2], scene[nm][:, 0].long())
    if (~nm).any():
        loss = loss + 20 * F.mse_loss(ps[~nm][:, 3:7], scene[~nm][:, 2:6])
    small = F.avg_pool2d(x01, 2)
    target = small * 2 - 1
    w = foreground_weight(small, 5.0)
    loss = loss + ((recon - target) ** 2 * w).mean() * 4
    return loss, pc


def train_encoder(data_dir: str, steps: int, batch: int, seed: int, lr: float = 1.5e-3) -> None:
    log = Log("encoder")
    seed_all(seed)
    split = Split(data_dir)
    cells, scene = encoder_targets(split.descriptions())
    n = len(cells)
    held = np.arange(n - 2000, n)
    cfg = EncoderConfig()
    enc, heads = VisualEncoder(cfg), EncoderHeads(cfg)
    params = list(enc.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    gen = np.random.default_rng(seed)
    ck = Checkpoint("encoder", gens=(gen,))
    state = ck.load()
    start, elapsed = 0, 0.0
    if state:
        enc.load_state_dict(state["encoder"]); heads.load_state_dict(state["heads"]); opt.load_state_dict(state["opt"])
        start, elapsed = state["step"], state["elapsed"]
        log(f"resumed at step {start}")
    t0 = time.time() - elapsed
    log(f"encoder {sum(p.numel() for p in enc.parameters())} params, heads {sum(p.numel() for p in heads.parameters())}; {n} images")
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, 100)
        idx = np.sort(gen.integers(0, n - 2000, batch))
        x01 = to_unit(split.images[idx])
        loss, _ = encoder_loss(heads, enc(clip_normalise(x01)), cells[idx], scene[idx], x01)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step}", loss=float(loss), steps_per_s=(step - start + 1) / max(1e-6, time.time() - t0 - elapsed))
        if step % 500 == 499:
            log("held-out probe", **evaluate_encoder(enc, heads, split, cells, scene, held[:500]))
        state = {"encoder": enc.state_dict(), "heads": heads.state_dict(), "opt": opt.state_dict(),
                 "step": step + 1, "elapsed": time.time() - t0, "config": cfg.__dict__}
        ck.save(state, force=step == steps - 1)
    acc = evaluate_encoder(enc, heads, split, cells, scene, held)
    log("held-out probe accuracy", **acc)
    torch.save({"encoder": enc.state_dict(), "config": cfg.__dict__, "probe": acc}, path("encoder.pt"))


@torch.no_grad()
def evaluate_encoder(enc, heads, split, cells, scene, idx):
    enc.eval(); heads.eval()
    x01 = to_unit(split.images[idx])
    pc, ps, _ = heads(enc(clip_normalise(x01)))
    present = cells[idx][:, :, 0] > 0
    pred_present = pc[:, :, 0] > 0
    m = present
    tgt = cells[idx][m]
    sel = pc[m]
    out = {
        "presence": float((pred_present == present).float().mean()),
        "shape": float((sel[:, 1:4].argmax(1) == tgt[:, 1].long()).float().mean()),
        "color": float((sel[:, 4:10].argmax(1) == tgt[:, 2].long()).float().mean()),
        "size": float((sel[:, 10:12].argmax(1) == tgt[:, 3].long()).float().mean()),
    }
    enc.train(); heads.train()
    return out


@torch.no_grad()
def embed_split(data_dir: str, batch: int = 512, encoder_file: str = "", device: str = "cpu") -> None:
    """Writes embeds.npy [N, tokens, D] beside the split's images (frozen encoder; by default the
    stage's encoder.pt)."""
    log = Log("embed")
    state = torch.load(encoder_file or path("encoder.pt"), map_location="cpu")
    cfg = EncoderConfig(**state["config"])
    enc = VisualEncoder(cfg)
    enc.load_state_dict(state["encoder"])
    enc.to(device).eval()
    split = Split(data_dir)
    n = len(split.images)
    out = np.lib.format.open_memmap(f"{data_dir}/embeds.npy", mode="w+", dtype=np.float32, shape=(n, cfg.tokens, cfg.dim))
    for i in range(0, n, batch):
        out[i:i + batch] = enc(clip_normalise(to_unit(split.images[i:i + batch])).to(device)).cpu().numpy()
    out.flush()
    log(f"embedded {n} images")
