"""Exports trained (or, with random=True, freshly initialised) networks as an emu-package/1 folder:
ONNX graphs (opset 17, fp32) named and shaped as DESIGN.md's table, manifest.json with every file's
sha256, the world's tokenizer.json, and parity/ cases (PyTorch outputs for fixed inputs)."""
import base64
import hashlib
import json
import os
import shutil
import numpy as np
import torch
from .common import path
from .data import CLIP_MEAN, CLIP_STD
from .lm import IMAGE_SUMMARY
from .decoder import BETA_END, BETA_START, TRAIN_TIMESTEPS, ddim_sample
from .modules import (AEConfig, Autoencoder, CausalLM, DirectDecoder, DirectHead, EncoderConfig, LatentUNet, LMConfig,
                      UNetConfig, VaeDecoder, VisualEncoder)

OPSET = 17


class Networks:
    def __init__(self, encoder, lm, ae, unet, direct_head, null):
        self.encoder, self.lm, self.ae, self.unet, self.direct_head, self.null = encoder, lm, ae, unet, direct_head, null
        for m in (encoder, lm, ae, unet, direct_head):
            m.eval()


def load_trained(require_direct: bool = True, require_unet: bool = True) -> Networks:
    """The trained networks from $EMU_TRAIN_DIR. `require_unet` / `require_direct` False: that
    decoder may still be training (evaluating the other one meanwhile); it is then untrained."""
    e = torch.load(path("encoder.pt"), map_location="cpu")
    enc = VisualEncoder(EncoderConfig(**e["config"])); enc.load_state_dict(e["encoder"])
    l = torch.load(path("lm.pt"), map_location="cpu")
    lm = CausalLM(LMConfig(**l["config"])); lm.load_state_dict(l["model"])
    a = torch.load(path("autoencoder.pt"), map_location="cpu")
    ae = Autoencoder(AEConfig(**a["config"])); ae.load_state_dict(a["ae"])
    # A decoder not required may still be training (the other one evaluated meanwhile): untrained.
    ckpt = lambda name, required: torch.load(path(name), map_location="cpu") if required or os.path.exists(path(name)) else None  # noqa: E731
    u, d = ckpt("unet.pt", require_unet), ckpt("direct.pt", require_direct)
    assert u or d, "neither decoder is trained yet"
    unet = LatentUNet(UNetConfig(**(u or d)["config"]))
    head = DirectHead(UNetConfig(**(d or u)["config"]), tokens=d["tokens"] if d else enc.cfg.tokens)
    if u:
        unet.load_state_dict(u["unet"])
    if d:
        head.load_state_dict(d["head"])
    return Networks(enc, lm, ae, unet, head, u["null"] if u else torch.zeros(enc.cfg.tokens, enc.cfg.dim))


def random_networks(vocab: int, seed: int = 0) -> Networks:
    torch.manual_seed(seed)
    ec = EncoderConfig()
    uc = UNetConfig(context_dim=ec.dim)
    return Networks(VisualEncoder(ec), CausalLM(LMConfig(vocab=vocab, dim=ec.dim, image_summary=IMAGE_SUMMARY)), Autoencoder(AEConfig()),
                    LatentUNet(uc), DirectHead(uc, tokens=ec.tokens), torch.zeros(ec.tokens, ec.dim))


def _tensor(t: torch.Tensor) -> dict:
    a = t.detach().contiguous().numpy()
    dtype = {np.dtype("float32"): "float32", np.dtype("int64"): "int64"}[a.dtype]
    return {"dtype": dtype, "dims": list(a.shape), "data_b64": base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode()}


def _export(module, args, file, inputs, outputs, dynamic):
    torch.onnx.export(module, args, file, opset_version=OPSET, input_names=inputs, output_names=outputs,
                      dynamic_axes=dynamic, do_constant_folding=True)


class _LMGraph(torch.nn.Module):
    """decoder_model_merged: flat past inputs → logits, visual_embeds, flat presents."""

    def __init__(self, lm: CausalLM):
        super().__init__()
        self.lm = lm

    def forward(self, inputs_embeds, attention_mask, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(self.lm.cfg.layers)]
        logits, vis, present = self.lm(inputs_embeds, attention_mask, position_ids, past)
        return (logits, vis) + tuple(t for kv in present for t in kv)


class _LMPart(torch.nn.Module):
    """One of the LM's single-input parts (embed, project_up, summary) as its own graph."""

    def __init__(self, lm, part: str):
        super().__init__()
        self.lm, self.part = lm, part

    def forward(self, x):
        return getattr(self.lm, self.part)(x)


def sha256(p: str) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def export_package(nets: Networks, out_dir: str, tokenizer_json: str, version: str, card: dict, e2e_cases=None) -> None:
    os.makedirs(out_dir, exist_ok=True)
    parity = os.path.join(out_dir, "parity")
    shutil.rmtree(parity, ignore_errors=True)
    os.makedirs(parity)
    ec, lc = nets.encoder.cfg, nets.lm.cfg
    uc, ac = nets.unet.cfg, nets.ae.cfg
    g = torch.Generator().manual_seed(7)
    cases = []

    def case(name, graph, inputs: dict, outputs: dict):
        cases.append(name)
        with open(os.path.join(parity, f"{name}.json"), "w") as f:
            json.dump({"graph": graph, "inputs": {k: _tensor(v) for k, v in inputs.items()},
                       "outputs": {k: _tensor(v) for k, v in outputs.items()}}, f)

    # visual_encoder
    px = torch.randn(2, 3, ec.image_size, ec.image_size, generator=g)
    f = os.path.join(out_dir, "visual_encoder.onnx")
    _export(nets.encoder, (px,), f, ["pixel_values"], ["image_embeds"], {"pixel_values": {0: "B"}, "image_embeds": {0: "B"}})
    case("visual_encoder", "visual_encoder", {"pixel_values": px[:1]}, {"image_embeds": nets.encoder(px[:1])})

    # embed_tokens / project_up
    ids = torch.randint(0, lc.vocab, (2, 5), generator=g)
    _export(_LMPart(nets.lm, "embed"), (ids,), os.path.join(out_dir, "embed_tokens.onnx"), ["input_ids"], ["inputs_embeds"],
            {"input_ids": {0: "B", 1: "T"}, "inputs_embeds": {0: "B", 1: "T"}})
    case("embed_tokens", "embed_tokens", {"input_ids": ids}, {"inputs_embeds": nets.lm.embed(ids)})
    ve = torch.randn(2, 3, lc.dim, generator=g)
    _export(_LMPart(nets.lm, "project_up"), (ve,), os.path.join(out_dir, "project_up.onnx"), ["visual_embeds"], ["inputs_embeds"],
            {"visual_embeds": {0: "B", 1: "T"}, "inputs_embeds": {0: "B", 1: "T"}})
    case("project_up", "project_up", {"visual_embeds": ve}, {"inputs_embeds": nets.lm.project_up(ve)})
    summary_file = os.path.join(out_dir, "image_summary.onnx")
    if nets.lm.summary is not None:
        # image_summary: one image's N visual tokens → the vector added at its [/IMG].
        vs = torch.randn(2, ec.tokens, lc.dim, generator=g)
        _export(_LMPart(nets.lm, "summary"), (vs,), summary_file, ["visual_embeds"], ["image_summary"],
                {"visual_embeds": {0: "B", 1: "N"}, "image_summary": {0: "B"}})
        case("image_summary", "image_summary", {"visual_embeds": vs}, {"image_summary": nets.lm.summary(vs)})
    elif os.path.exists(summary_file):
        os.remove(summary_file)

    # decoder_model_merged: traced with a non-empty past; checked with an empty one and a cached step.
    L = lc.layers
    past_names = [f"past_key_values.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    b, t, p = 2, 3, 2
    emb = torch.randn(b, t, lc.hidden, generator=g)
    mask = torch.ones(b, p + t, dtype=torch.long)
    pos = torch.arange(p, p + t).unsqueeze(0).repeat(b, 1)
    past = [torch.randn(b, lc.heads, p, lc.head_dim, generator=g) for _ in range(2 * L)]
    dyn = {"inputs_embeds": {0: "B", 1: "T"}, "attention_mask": {0: "B", 1: "P+T"}, "position_ids": {0: "B", 1: "T"},
           "logits": {0: "B", 1: "T"}, "visual_embeds": {0: "B", 1: "T"}}
    dyn.update({n: {0: "B", 2: "P"} for n in past_names})
    dyn.update({n: {0: "B", 2: "P+T"} for n in present_names})
    graph = _LMGraph(nets.lm)
    _export(graph, (emb, mask, pos, *past), os.path.join(out_dir, "decoder_model_merged.onnx"),
            ["inputs_embeds", "attention_mask", "position_ids"] + past_names, ["logits", "visual_embeds"] + present_names, dyn)
    # Prefill from an empty past with left padding (row 0 padded by 2), then one cached step.
    b, t = 2, 6
    emb = torch.randn(b, t, lc.hidden, generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, :2] = 0
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    empty = [torch.zeros(b, lc.heads, 0, lc.head_dim) for _ in range(2 * L)]
    out = graph(emb, mask, pos, *empty)
    case("decoder_prefill", "decoder_model_merged",
         {"inputs_embeds": emb, "attention_mask": mask, "position_ids": pos, **dict(zip(past_names, empty))},
         {"logits": out[0], "visual_embeds": out[1], **dict(zip(present_names, out[2:]))})
    emb2 = torch.randn(b, 1, lc.hidden, generator=g)
    mask2 = torch.cat([mask, torch.ones(b, 1, dtype=torch.long)], 1)
    pos2 = mask2.sum(1, keepdim=True) - 1
    out2 = graph(emb2, mask2, pos2, *out[2:])
    case("decoder_step", "decoder_model_merged",
         {"inputs_embeds": emb2, "attention_mask": mask2, "position_ids": pos2, **dict(zip(past_names, out[2:]))},
         {"logits": out2[0], "visual_embeds": out2[1], **dict(zip(present_names, out2[2:]))})

    # unet
    n_tok = ec.tokens
    s = torch.randn(2, uc.latent_channels, ac.latent_size, ac.latent_size, generator=g)
    ts = torch.tensor([999.0, 421.0])
    ctx = torch.randn(2, n_tok, uc.context_dim, generator=g)
    _export(nets.unet, (s, ts, ctx, ctx.mean(1)), os.path.join(out_dir, "unet.onnx"),
            ["sample", "timestep", "encoder_hidden_states", "pooled"], ["model_output"],
            {"sample": {0: "B"}, "timestep": {0: "B"}, "encoder_hidden_states": {0: "B", 1: "N"}, "pooled": {0: "B"},
             "model_output": {0: "B"}})
    case("unet", "unet", {"sample": s, "timestep": ts, "encoder_hidden_states": ctx, "pooled": ctx.mean(1)},
         {"model_output": nets.unet(s, ts, ctx, ctx.mean(1))})

    # vae_decoder (input: normalised latent; the de-normalisation is inside the graph)
    vae = VaeDecoder(nets.ae).eval()
    _export(vae, (s,), os.path.join(out_dir, "vae_decoder.onnx"), ["latent"], ["image"], {"latent": {0: "B"}, "image": {0: "B"}})
    case("vae_decoder", "vae_decoder", {"latent": s[:1]}, {"image": vae(s[:1])})

    # direct_decoder
    direct = DirectDecoder(nets.direct_head, nets.ae).eval()
    _export(direct, (ctx,), os.path.join(out_dir, "direct_decoder.onnx"), ["encoder_hidden_states"], ["image"],
            {"encoder_hidden_states": {0: "B"}, "image": {0: "B"}})
    case("direct_decoder", "direct_decoder", {"encoder_hidden_states": ctx[:1]}, {"image": direct(ctx[:1])})

    # One DDIM sample with guidance from fixed noise: the scheduler's reference.
    noise = torch.randn(1, uc.latent_channels, ac.latent_size, ac.latent_size, generator=g)
    cond = ctx[:1]
    uncond = nets.null.unsqueeze(0)
    img = ddim_sample(nets.unet, vae, cond, uncond, steps=4, guidance=2.0, noise=noise)
    case("ddim_4_steps_g2", "scheduler:ddim", {"encoder_hidden_states": cond, "negative_hidden_states": uncond, "noise": noise,
                                              "steps": torch.tensor([4]), "guidance_scale": torch.tensor([2.0])},
         {"image": img})

    for name, c in (e2e_cases or {}).items():
        case(name, c["graph"], c["inputs"], c["outputs"])

    if os.path.abspath(tokenizer_json) != os.path.abspath(os.path.join(out_dir, "tokenizer.json")):
        shutil.copyfile(tokenizer_json, os.path.join(out_dir, "tokenizer.json"))
    files = {}
    for name in sorted(os.listdir(out_dir)):
        fp = os.path.join(out_dir, name)
        if os.path.isfile(fp) and name not in ("manifest.json", "README.md"):
            files[name] = {"sha256": sha256(fp), "bytes": os.path.getsize(fp)}
    for name in sorted(os.listdir(parity)):
        fp = os.path.join(parity, name)
        files[f"parity/{name}"] = {"sha256": sha256(fp), "bytes": os.path.getsize(fp)}
    manifest = {
        "format": "emu-package/1",
        "name": "emu2-tiny", "version": version,
        "files": files,
        "tokenizer": {
            "file": "tokenizer.json",
            "special": {"bos": "<s>", "eos": "</s>", "pad": "[PAD]", "unk": "[UNK]", "img_start": "[IMG]",
                        "img_end": "[/IMG]", "image": "<image>", "frame": "[gIMG]", "frame_end": "[/gIMG]",
                        "video": "[VIDEO]", "grounding": "<grounding>", "phrase_start": "<phrase>",
                        "phrase_end": "</phrase>", "object_start": "<object>", "object_end": "</object>",
                        "user": "[USER]", "assistant": "[ASSISTANT]"},
            "chat": {"system": "", "user": "[USER]: {text}", "assistant": "[ASSISTANT]: {text}",
                     "turn_end": "</s>", "generation_prompt": "[ASSISTANT]:"},
        },
        "encoder": {"file": "visual_encoder.onnx", "image_size": [ec.image_size, ec.image_size], "resize": "stretch",
                    "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "tokens_per_image": ec.tokens, "dim": ec.dim,
                    "box_mask_thickness": 2},
        "lm": {"embed_tokens": "embed_tokens.onnx", "project_up": "project_up.onnx",
               "decoder": "decoder_model_merged.onnx", "hidden": lc.hidden, "layers": lc.layers, "heads": lc.heads,
               "head_dim": lc.head_dim, "vocab": lc.vocab, "max_positions": lc.max_positions,
               **({"image_summary": "image_summary.onnx"} if nets.lm.summary is not None else {})},
        "decoders": {
            "default": card.get("default_decoder", "diffusion"),
            "diffusion": {"type": "diffusion", "unet": "unet.onnx", "vae_decoder": "vae_decoder.onnx",
                          "latent_shape": [uc.latent_channels, ac.latent_size, ac.latent_size], "scaling_factor": 1.0,
                          "pooled_input": True,
                          "scheduler": {"type": "ddim", "train_timesteps": TRAIN_TIMESTEPS, "beta_schedule": "scaled_linear",
                                        "beta_start": BETA_START, "beta_end": BETA_END, "prediction_type": "epsilon",
                                        "timestep_spacing": "leading", "steps_offset": 1},
                          "default_steps": 20, "default_guidance": card.get("default_guidance", 2.0)},
            "direct": {"type": "direct", "file": "direct_decoder.onnx"},
        },
        "video": {"frames": 8, "fps": 8},
        "generation": {"max_new_tokens": 32, "num_beams": 1, "temperature": 0},
        "parity": {"cases": cases, "atol": 1e-4},
        "training": card.get("training", {}),
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
