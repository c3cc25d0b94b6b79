"""emu2-tiny's networks: Emu2's architecture at toy size, in plain PyTorch (no transformers/diffusers).

- VisualEncoder: ViT over 8×8 patches of a 64×64 image, average-pooled 8×8 → 4×4 = 16 tokens
  (Emu2: EVA-CLIP over 32×32 patches pooled to 8×8 = 64), projected to the encoder dim D.
- CausalLM: LLaMA-style decoder (RMSNorm, SwiGLU, RoPE, KV cache) with project_up (D→H) and the
  regression head project_down (H→D) on the final-normed hidden state, as Emu2.
- Autoencoder + LatentUNet: latent diffusion decoder conditioned on the regressed tokens
  (cross-attention) and their mean (FiLM), as Emu2's SDXL-style decoder at toy size.
- DirectDecoder: one forward pass tokens → latent → the autoencoder's decoder.
Attention is written by hand: Debian's torch 1.13 exports no scaled_dot_product_attention.
"""
from dataclasses import dataclass, asdict
import math
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- visual encoder

@dataclass
class EncoderConfig:
    image_size: int = 64
    patch: int = 8
    width: int = 96
    layers: int = 4
    heads: int = 4
    pool: int = 2            # 8×8 patch grid → 4×4 tokens
    dim: int = 64            # D: the encoder space the LM regresses and the decoder reads

    @property
    def tokens(self) -> int:
        g = self.image_size // self.patch // self.pool
        return g * g


class Block(nn.Module):
    """Pre-LN transformer block (bidirectional) for the ViT."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        b, t, c = x.shape
        h = self.ln1(x)
        q, k, v = self.qkv(h).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // self.heads), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


class UnitNorm(nn.Module):
    """LayerNorm without affine parameters, written out: torch 1.13 exports the parameter-free
    nn.LayerNorm as an invalid ONNX node."""

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = (x - mu).pow(2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5)


class VisualEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        # A convolutional stem as the patch embedding (3 stride-2 convs = 8×8 patches): small shapes
        # are only ~2 patches wide, and a linear patch embedding learns their outlines too slowly here.
        self.patch = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
            nn.Conv2d(64, cfg.width, 3, 2, 1))
        grid = cfg.image_size // cfg.patch
        self.pos = nn.Parameter(torch.randn(1, grid * grid, cfg.width) * 0.02)
        self.blocks = nn.ModuleList([Block(cfg.width, cfg.heads) for _ in range(cfg.layers)])
        self.ln = nn.LayerNorm(cfg.width)
        self.out = nn.Linear(cfg.width, cfg.dim)
        # Unit-scale embeddings make the LM's regression loss and the decoder's conditioning well scaled.
        self.norm = UnitNorm()

    def forward(self, pixel_values):
        x = self.patch(pixel_values)                      # [B,W,8,8]
        b, w, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2) + self.pos       # [B,64,W]
        for blk in self.blocks:
            x = blk(x)
        x = self.ln(x).transpose(1, 2).reshape(b, w, gh, gw)
        x = F.avg_pool2d(x, self.cfg.pool)                # [B,W,4,4] as Emu2's avg_pool2d
        x = x.flatten(2).transpose(1, 2)                  # [B,16,W], row-major
        return self.norm(self.out(x))                     # image_embeds [B,16,D]


class EncoderHeads(nn.Module):
    """Training-only heads that make the embeddings carry every attribute, position and box.
    The object head is local: each of the 4×4 tokens predicts the object whose centre lies in its
    16×16-pixel region (presence, shape, colour, size, offset), so every token must describe what
    it covers; a scene head reads the whole set (background, is-box-mask, box), and a pixel head
    reconstructs the image at half resolution from the tokens alone."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.local = nn.Sequential(nn.Linear(cfg.dim, 128), nn.GELU(), nn.Linear(128, 14))
        self.trunk = nn.Sequential(nn.Linear(cfg.tokens * cfg.dim, 256), nn.GELU())
        self.scene = nn.Linear(256, 2 + 1 + 4)
        self.g = int(math.sqrt(cfg.tokens))
        self.recon = nn.Sequential(                       # 4×4 → 32×32 (half-resolution) reconstruction
            nn.Conv2d(cfg.dim, 64, 3, padding=1), nn.GELU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(64, 48, 3, padding=1), nn.GELU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(48, 32, 3, padding=1), nn.GELU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(32, 16, 3, padding=1), nn.GELU(),
            nn.Conv2d(16, 3, 3, padding=1))

    def forward(self, emb):
        b = emb.shape[0]
        grid = emb.transpose(1, 2).reshape(b, -1, self.g, self.g)
        return self.local(emb), self.scene(self.trunk(emb.flatten(1))), torch.tanh(self.recon(grid))


# ---------------------------------------------------------------- language model

@dataclass
class LMConfig:
    vocab: int = 160
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    ffn: int = 384
    max_positions: int = 512
    rope_theta: float = 10000.0
    dim: int = 64            # encoder dim D (project_up / project_down)
    # "" (Emu2 exactly) or "attn": an image summary added to the input embedding of each image's
    # closing `[/IMG]` (see ImageSummary). The manifest declares it so the runtime applies it.
    image_summary: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(pos, d: int, theta: float):
    """cos and sin of the rotary angles [B,1,T,d] for positions pos [B,T] int64, computed once per
    forward and shared by every layer's queries and keys."""
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=pos.device) / d))
    ang = pos.to(torch.float32).unsqueeze(-1) * inv                 # [B,T,d/2]
    ang = torch.cat([ang, ang], -1).unsqueeze(1)
    return ang.cos(), ang.sin()


def rope(x, cos, sin):
    """Rotary embedding (LLaMA's rotate-half form). x [B,h,T,d]; cos, sin from rope_tables."""
    d = x.shape[-1]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Packing:
    """The real (unpadded) positions of a [B,T] batch. Training batches are padded to their longest
    row (a quarter to a third of their tokens); with a Packing the projections, norms, MLP and heads
    run on the N real rows only, and attention on the padded [B,T] layout. Padded keys are masked
    out either way, so the result at every real position is the same as the padded computation's."""

    def __init__(self, mask):
        self.b, self.t = mask.shape
        self.idx = torch.nonzero(mask.reshape(-1)).squeeze(1)

    def pack(self, x):
        """[B,T,…] → [N,…]"""
        return x.reshape(self.b * self.t, *x.shape[2:])[self.idx]

    def unpack(self, x):
        """[N,…] → [B,T,…], zero at padded positions."""
        out = x.new_zeros(self.b * self.t, *x.shape[1:]).index_copy(0, self.idx, x)
        return out.reshape(self.b, self.t, *x.shape[1:])


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.norm1 = RMSNorm(h)
        self.q = nn.Linear(h, h, bias=False)
        self.k = nn.Linear(h, h, bias=False)
        self.v = nn.Linear(h, h, bias=False)
        self.o = nn.Linear(h, h, bias=False)
        self.norm2 = RMSNorm(h)
        self.gate = nn.Linear(h, cfg.ffn, bias=False)
        self.up = nn.Linear(h, cfg.ffn, bias=False)
        self.down = nn.Linear(cfg.ffn, h, bias=False)

    def forward(self, x, rot, bias, past_k, past_v, packing: "Packing | None" = None):
        """x [B,T,H], or [N,H] with its Packing; rot: (cos, sin) from rope_tables for the new positions."""
        nh, hd = self.cfg.heads, self.cfg.head_dim
        hs = self.norm1(x)
        q, k, v = self.q(hs), self.k(hs), self.v(hs)
        if packing is not None:
            q, k, v = packing.unpack(torch.cat([q, k, v], -1)).chunk(3, -1)
        b, t, _ = q.shape
        # The 1/√d scale on the queries, not on the [T, P+T] scores: the same product, fewer multiplies.
        q = rope(q.reshape(b, t, nh, hd).transpose(1, 2), *rot) * (1.0 / math.sqrt(hd))
        k = rope(k.reshape(b, t, nh, hd).transpose(1, 2), *rot)
        v = v.reshape(b, t, nh, hd).transpose(1, 2)
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        att = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
        a = (att @ v).transpose(1, 2).reshape(b, t, nh * hd)
        x = x + self.o(packing.pack(a) if packing is not None else a)
        hs = self.norm2(x)
        return x + self.down(F.silu(self.gate(hs)) * self.up(hs)), k, v


class ImageSummary(nn.Module):
    """One vector per image, from its visual tokens [B,N,D] → [B,H], added to the embedding of the
    image's closing `[/IMG]` (emu2-tiny's one deviation from Emu2, declared in the manifest).

    Why: in Emu2's layout `[IMG] <image>×N [/IMG] dax .` the token before every few-shot label, and
    the position that predicts the query's label, is the constant `[/IMG]`, so a shallow LM's
    induction circuit (copy the previous token's content into the label, match the query against
    it) has nothing to copy; and the encoder puts an object's attributes in the one token that
    covers its centre. A per-token feature, attention-pooled over the image (the pooling picks the
    tokens that hold something), gives `[/IMG]` the image's content."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.heads = cfg.heads
        self.feat = nn.Linear(cfg.dim, cfg.hidden)
        self.score = nn.Linear(cfg.hidden, cfg.heads)
        self.out = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.norm = RMSNorm(cfg.hidden)

    def forward(self, visual):
        b, n, _ = visual.shape
        f = F.gelu(self.feat(visual))                                   # [B,N,H]
        a = torch.softmax(self.score(f), dim=1)                         # [B,N,heads]
        f = f.reshape(b, n, self.heads, -1)
        pooled = (a.unsqueeze(-1) * f).sum(1).reshape(b, -1)            # [B,H]
        return self.norm(self.out(pooled))


class CausalLM(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
        self.project_up = nn.Linear(cfg.dim, cfg.hidden, bias=False)
        self.summary = ImageSummary(cfg) if cfg.image_summary == "attn" else None
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.layers)])
        self.norm = RMSNorm(cfg.hidden)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        self.project_down = nn.Linear(cfg.hidden, cfg.dim, bias=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, past, pack: bool = False, tap: int = -1):
        """past: list of (k, v) [B,h,P,hd]; attention_mask [B,P+T] (1 = real token). `pack` (training,
        empty past only) runs everything but attention on the real tokens (Packing); logits and
        regressions at padded positions are then zero instead of unused values. `tap` ≥ 0 (training)
        also returns the residual stream after that layer, [B,T,hidden], as a fourth result."""
        b, t, _ = inputs_embeds.shape
        p = past[0][0].shape[2]
        total = p + t
        # Causal over the full (past + new) length, and padded positions masked out. A finite
        # minimum (not -inf) keeps fully padded rows free of NaN.
        dev = inputs_embeds.device
        q_idx = torch.arange(t, device=dev).unsqueeze(1) + p
        k_idx = torch.arange(total, device=dev).unsqueeze(0)
        allowed = (k_idx <= q_idx).unsqueeze(0) & attention_mask[:, None, :].bool()
        bias = torch.zeros(b, 1, t, total, device=dev).masked_fill(~allowed.unsqueeze(1), torch.finfo(torch.float32).min)
        packing = Packing(attention_mask) if pack and p == 0 else None
        x = packing.pack(inputs_embeds) if packing is not None else inputs_embeds
        rot = rope_tables(position_ids, self.cfg.head_dim, self.cfg.rope_theta)
        present = []
        tapped = None
        for i, (layer, (pk, pv)) in enumerate(zip(self.layers, past)):
            x, k, v = layer(x, rot, bias, pk, pv, packing)
            present.append((k, v))
            if i == tap:
                tapped = packing.unpack(x) if packing is not None else x
        h = self.norm(x)
        logits, vis = self.lm_head(h), self.project_down(h)
        if packing is not None:
            logits, vis = packing.unpack(logits), packing.unpack(vis)
        return (logits, vis, present) if tap < 0 else (logits, vis, present, tapped)

    def empty_past(self, batch: int):
        c = self.cfg
        z = torch.zeros(batch, c.heads, 0, c.head_dim, device=self.lm_head.weight.device)
        return [(z, z) for _ in range(c.layers)]


# ---------------------------------------------------------------- autoencoder and diffusion UNet

class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int = 0):
        super().__init__()
        self.n1 = nn.GroupNorm(8, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.n2 = nn.GroupNorm(8, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout) if emb else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e=None):
        h = self.c1(F.silu(self.n1(x)))
        h = self.n2(h)
        if self.film is not None:
            scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.skip(x) + self.c2(F.silu(h))


@dataclass
class AEConfig:
    latent_channels: int = 8
    latent_size: int = 16


class Autoencoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        c = cfg.latent_channels
        self.cfg = cfg
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 64, 4, stride=2, padding=1),
            ResBlock(64, 64), nn.GroupNorm(8, 64), nn.SiLU(), nn.Conv2d(64, c, 1))
        # The work happens at 16×16; the two upsampling stages are a conv + PixelShuffle each
        # (ResBlocks at 32² and 64² cost 5× more per step on a CPU for little fidelity).
        self.decoder = nn.Sequential(
            nn.Conv2d(c, 96, 3, padding=1), ResBlock(96, 96), ResBlock(96, 96),
            nn.Conv2d(96, 4 * 64, 3, padding=1), nn.PixelShuffle(2), nn.SiLU(),
            nn.Conv2d(64, 4 * 32, 3, padding=1), nn.PixelShuffle(2),
            nn.GroupNorm(8, 32), nn.SiLU(), nn.Conv2d(32, 3, 3, padding=1))
        # Per-channel latent statistics (set after training): the diffusion model works on
        # (z - mean) / std, and the exported vae_decoder undoes it first.
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_std", torch.ones(c))

    def encode(self, img):
        return self.encoder(img)

    def decode(self, z):
        return torch.tanh(self.decoder(z))

    def normalise(self, z):
        return (z - self.latent_mean[None, :, None, None]) / self.latent_std[None, :, None, None]

    def denormalise(self, zn):
        return zn * self.latent_std[None, :, None, None] + self.latent_mean[None, :, None, None]


class VaeDecoder(nn.Module):
    """The exported graph: normalised latent → image in [-1, 1]."""

    def __init__(self, ae: Autoencoder):
        super().__init__()
        self.ae = ae

    def forward(self, latent):
        return self.ae.decode(self.ae.denormalise(latent))


def timestep_embedding(t, dim: int):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    ang = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


class CrossAttention(nn.Module):
    def __init__(self, channels: int, context: int, heads: int = 4, self_attn: bool = False):
        super().__init__()
        self.heads = heads
        self.self_attn = self_attn
        self.norm = nn.GroupNorm(8, channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels if self_attn else context, 2 * channels)
        self.o = nn.Linear(channels, channels)
        self.ctx_pos = None if self_attn else nn.Parameter(torch.zeros(1, 256, context))

    def forward(self, x, ctx):
        b, c, h, w = x.shape
        hs = self.norm(x).flatten(2).transpose(1, 2)                # [B,hw,C]
        src = hs if self.self_attn else ctx + self.ctx_pos[:, : ctx.shape[1]]
        q = self.q(hs).reshape(b, h * w, self.heads, c // self.heads).transpose(1, 2)
        k, v = self.kv(src).reshape(b, src.shape[1], 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // self.heads), dim=-1)
        out = self.o((att @ v).transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


@dataclass
class UNetConfig:
    latent_channels: int = 8
    context_dim: int = 64
    c1: int = 64
    c2: int = 112
    emb: int = 128


class LatentUNet(nn.Module):
    """ε-prediction UNet on 16×16 latents; cross-attention to the tokens at every level, FiLM from
    the timestep and the pooled (mean) tokens, self-attention at 8×8."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        e, c1, c2, d = cfg.emb, cfg.c1, cfg.c2, cfg.context_dim
        self.t_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.p_mlp = nn.Sequential(nn.Linear(d, e), nn.SiLU(), nn.Linear(e, e))
        self.conv_in = nn.Conv2d(cfg.latent_channels, c1, 3, padding=1)
        self.d1 = ResBlock(c1, c1, e); self.a1 = CrossAttention(c1, d)
        self.down = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.d2 = ResBlock(c1, c2, e); self.a2 = CrossAttention(c2, d); self.s2 = CrossAttention(c2, d, self_attn=True)
        self.m = ResBlock(c2, c2, e); self.am = CrossAttention(c2, d); self.sm = CrossAttention(c2, d, self_attn=True)
        self.u2 = ResBlock(2 * c2, c2, e); self.au2 = CrossAttention(c2, d)
        self.up = nn.Conv2d(c2, 4 * c2, 3, padding=1)
        self.u1 = ResBlock(c2 + c1, c1, e); self.au1 = CrossAttention(c1, d)
        self.u0 = ResBlock(2 * c1, c1, e)
        self.out = nn.Sequential(nn.GroupNorm(8, c1), nn.SiLU(), nn.Conv2d(c1, cfg.latent_channels, 3, padding=1))

    def forward(self, sample, timestep, encoder_hidden_states, pooled):
        emb = self.t_mlp(timestep_embedding(timestep, self.cfg.emb)) + self.p_mlp(pooled)
        ctx = encoder_hidden_states
        h0 = self.conv_in(sample)
        h1 = self.a1(self.d1(h0, emb), ctx)
        h = self.down(h1)
        h2 = self.s2(self.a2(self.d2(h, emb), ctx), ctx)
        h = self.sm(self.am(self.m(h2, emb), ctx), ctx)
        h = self.au2(self.u2(torch.cat([h, h2], 1), emb), ctx)
        h = F.pixel_shuffle(self.up(h), 2)
        h = self.au1(self.u1(torch.cat([h, h1], 1), emb), ctx)
        h = self.u0(torch.cat([h, h0], 1), emb)
        return self.out(h)


class DirectHead(nn.Module):
    """Tokens → normalised latent in one pass (the `direct` decoder, before the VAE decoder)."""

    def __init__(self, cfg: UNetConfig, tokens: int = 16):
        super().__init__()
        d, c1 = cfg.context_dim, cfg.c1
        self.g = int(math.sqrt(tokens))
        self.inp = nn.Conv2d(d, 128, 1)
        self.body = nn.Sequential(
            ResBlock(128, 128), nn.Upsample(scale_factor=2, mode="nearest"), ResBlock(128, 96),
            nn.Upsample(scale_factor=2, mode="nearest"), ResBlock(96, c1), ResBlock(c1, c1),
            nn.GroupNorm(8, c1), nn.SiLU(), nn.Conv2d(c1, cfg.latent_channels, 3, padding=1))
        self.mix = CrossAttention(128, d)

    def forward(self, encoder_hidden_states):
        b = encoder_hidden_states.shape[0]
        x = self.inp(encoder_hidden_states.transpose(1, 2).reshape(b, -1, self.g, self.g))
        return self.body(self.mix(x, encoder_hidden_states))


class DirectDecoder(nn.Module):
    """The exported `direct` graph: tokens → image in [-1, 1]."""

    def __init__(self, head: DirectHead, ae: Autoencoder):
        super().__init__()
        self.head = head
        self.vae = VaeDecoder(ae)

    def forward(self, encoder_hidden_states):
        return self.vae(self.head(encoder_hidden_states))


def config_dict(cfg) -> dict:
    return asdict(cfg)
