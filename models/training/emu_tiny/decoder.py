"""Stage 2: the visual decoders. An autoencoder (64×64×3 ↔ 16×16×C), then a latent diffusion UNet
conditioned on the frozen encoder's tokens of the same image (Emu2's decoder is trained to render
the EVA-space tokens it is given), then a one-pass `direct` head on the same latents."""
import time
import numpy as np
import torch
import torch.nn.functional as F
from .common import Checkpoint, Log, cosine_lr, path, seed_all
from .data import Split, foreground_weight, to_unit
from .modules import AEConfig, Autoencoder, DirectHead, LatentUNet, UNetConfig

# Emu2's scheduler family (reference/emu2.md §1.4): scaled_linear betas, 1000 steps, ε-prediction.
TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012
# Conditioning noise during UNet training: the LM's regressed tokens are near, not at, the encoder's.
COND_NOISE_MAX = 0.25
COND_DROPOUT = 0.1


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, TRAIN_TIMESTEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def _loop(stage, models, opt, steps, lr, warmup, step_fn, log, gen):
    ck = Checkpoint(stage, gens=(gen,))
    state = ck.load()
    start, elapsed = 0, 0.0
    if state:
        for name, m in models.items():
            m.load_state_dict(state[name])
        opt.load_state_dict(state["opt"])
        start, elapsed = state["step"], state["elapsed"]
        log(f"resumed at step {start}")
    t0 = time.time() - elapsed
    params = [p for m in models.values() for p in m.parameters() if p.requires_grad]
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup)
        loss = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step}", loss=float(loss), steps_per_s=(step - start + 1) / max(1e-6, time.time() - t0 - elapsed))
        snap = {name: m.state_dict() for name, m in models.items()}
        snap.update(opt=opt.state_dict(), step=step + 1, elapsed=time.time() - t0)
        ck.save(snap, force=step == steps - 1)
    return time.time() - t0


def train_autoencoder(data_dir: str, steps: int, batch: int, seed: int, lr: float = 2e-3) -> None:
    log = Log("autoencoder")
    seed_all(seed)
    split = Split(data_dir)
    n = len(split.images)
    ae = Autoencoder(AEConfig())
    opt = torch.optim.AdamW(ae.parameters(), lr=lr, weight_decay=0.0)
    gen = np.random.default_rng(seed)
    log(f"autoencoder {sum(p.numel() for p in ae.parameters())} params")

    def step_fn(step):
        x01 = to_unit(split.images[np.sort(gen.integers(0, n - 1000, batch))])
        x = x01 * 2 - 1
        z = ae.encode(x)
        z = z + torch.randn_like(z) * 0.1 * z.detach().std()
        w = foreground_weight(x01, 10.0)
        return (((ae.decode(z) - x) ** 2) * w).mean()

    took = _loop("autoencoder", {"ae": ae}, opt, steps, lr, 200, step_fn, log, gen)
    # Latent statistics for the diffusion model's normalised space.
    with torch.no_grad():
        idx = np.sort(gen.choice(n, 4096, replace=False))
        z = torch.cat([ae.encode(to_unit(split.images[idx[i:i + 512]]) * 2 - 1) for i in range(0, len(idx), 512)])
        ae.latent_mean.copy_(z.mean((0, 2, 3)))
        ae.latent_std.copy_(z.std((0, 2, 3)))
    torch.save({"ae": ae.state_dict(), "config": ae.cfg.__dict__, "train_s": took}, path("autoencoder.pt"))
    log("saved", latent_std=float(ae.latent_std.mean()))


def load_autoencoder() -> Autoencoder:
    s = torch.load(path("autoencoder.pt"), map_location="cpu")
    ae = Autoencoder(AEConfig(**s["config"]))
    ae.load_state_dict(s["ae"])
    ae.eval()
    for p in ae.parameters():
        p.requires_grad_(False)
    return ae


@torch.no_grad()
def latents_for_split(data_dir: str, ae: Autoencoder, log) -> np.ndarray:
    """Normalised latents of every training image, cached beside the split."""
    f = f"{data_dir}/latents.npy"
    split = Split(data_dir)
    n = len(split.images)
    try:
        z = np.load(f, mmap_mode="r")
        if z.shape[0] == n:
            return z
    except (FileNotFoundError, ValueError):
        pass
    c, s = ae.cfg.latent_channels, ae.cfg.latent_size
    out = np.lib.format.open_memmap(f + ".tmp.npy", mode="w+", dtype=np.float32, shape=(n, c, s, s))
    for i in range(0, n, 512):
        out[i:i + 512] = ae.normalise(ae.encode(to_unit(split.images[i:i + 512]) * 2 - 1)).numpy()
    out.flush()
    del out
    import os
    os.replace(f + ".tmp.npy", f)
    log(f"encoded {n} latents")
    return np.load(f, mmap_mode="r")


def null_condition(embeds: np.ndarray) -> torch.Tensor:
    """The unconditional context: the mean tokens, which is what the LM regresses for an empty prompt."""
    return torch.from_numpy(np.asarray(embeds[:20000]).mean(0))


def train_unet(data_dir: str, steps: int, batch: int, seed: int, lr: float = 1e-3) -> None:
    log = Log("unet")
    seed_all(seed)
    ae = load_autoencoder()
    latents = latents_for_split(data_dir, ae, log)
    embeds = np.load(f"{data_dir}/embeds.npy", mmap_mode="r")
    n = len(latents)
    null = null_condition(embeds)
    unet = LatentUNet(UNetConfig(latent_channels=ae.cfg.latent_channels, context_dim=embeds.shape[2]))
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    ac = alphas_cumprod()
    gen = np.random.default_rng(seed)
    log(f"unet {sum(p.numel() for p in unet.parameters())} params; {n} latents")

    def step_fn(step):
        idx = np.sort(gen.integers(0, n, batch))
        x0 = torch.from_numpy(np.asarray(latents[idx]))
        cond = torch.from_numpy(np.asarray(embeds[idx]))
        cond = cond + torch.randn_like(cond) * torch.rand(batch, 1, 1) * COND_NOISE_MAX
        drop = torch.rand(batch) < COND_DROPOUT
        cond[drop] = null
        t = torch.randint(0, TRAIN_TIMESTEPS, (batch,))
        a = ac[t].view(-1, 1, 1, 1)
        eps = torch.randn_like(x0)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return F.mse_loss(unet(xt, t.float(), cond, cond.mean(1)), eps)

    took = _loop("unet", {"unet": unet}, opt, steps, lr, 200, step_fn, log, gen)
    torch.save({"unet": unet.state_dict(), "config": unet.cfg.__dict__, "null": null, "train_s": took}, path("unet.pt"))
    log("saved")


def train_direct(data_dir: str, steps: int, batch: int, seed: int, lr: float = 1e-3) -> None:
    log = Log("direct")
    seed_all(seed)
    ae = load_autoencoder()
    latents = latents_for_split(data_dir, ae, log)
    embeds = np.load(f"{data_dir}/embeds.npy", mmap_mode="r")
    n = len(latents)
    cfg = UNetConfig(latent_channels=ae.cfg.latent_channels, context_dim=embeds.shape[2])
    head = DirectHead(cfg, tokens=embeds.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    gen = np.random.default_rng(seed)
    log(f"direct head {sum(p.numel() for p in head.parameters())} params")

    def step_fn(step):
        idx = np.sort(gen.integers(0, n, batch))
        z = torch.from_numpy(np.asarray(latents[idx]))
        cond = torch.from_numpy(np.asarray(embeds[idx]))
        cond = cond + torch.randn_like(cond) * torch.rand(batch, 1, 1) * COND_NOISE_MAX
        return F.mse_loss(head(cond), z)

    took = _loop("direct", {"head": head}, opt, steps, lr, 100, step_fn, log, gen)
    torch.save({"head": head.state_dict(), "config": cfg.__dict__, "tokens": embeds.shape[1], "train_s": took}, path("direct.pt"))
    log("saved")


# ---------------------------------------------------------------- sampling (evaluation and parity)

def ddim_timesteps(steps: int) -> list:
    """'leading' spacing with steps_offset 1, as Stable Diffusion's DDIM configuration."""
    ratio = TRAIN_TIMESTEPS // steps
    return [int(t) for t in (np.arange(0, steps) * ratio)[::-1] + 1]


@torch.no_grad()
def ddim_sample(unet, vae_decode, cond, uncond, steps: int, guidance: float, noise):
    """cond/uncond [B,N,D]; noise [B,C,h,w] (the initial latent). Batch is ordered [cond, uncond]."""
    ac = alphas_cumprod()
    x = noise
    ts = ddim_timesteps(steps)
    b = cond.shape[0]
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        a_t = ac[t]
        a_prev = ac[prev] if prev >= 0 else ac[0]
        if guidance != 1.0:
            ctx = torch.cat([cond, uncond])
            out = unet(torch.cat([x, x]), torch.full((2 * b,), float(t)), ctx, ctx.mean(1))
            e_c, e_u = out[:b], out[b:]
            eps = e_u + guidance * (e_c - e_u)
        else:
            eps = unet(x, torch.full((b,), float(t)), cond, cond.mean(1))
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return vae_decode(x)
