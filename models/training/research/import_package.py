"""Recovers the training checkpoints of a shipped package from its ONNX graphs, so that one stage
can be retrained (e.g. only the LM) on the package's own encoder and decoders after the run that
trained them, and its checkpoints, are gone.

  EMU_TRAIN_DIR=DIR /usr/bin/python3 models/training/research/import_package.py [--package models/emu2-tiny]

writes DIR/encoder.pt, lm.pt, autoencoder.pt, unet.pt and direct.pt as the stages save them. How: the
same networks, every parameter set to distinct random values, are exported by export_package into a
scratch folder; each parameter is found among that template's initializers (as is, or transposed
where the exporter folded a Linear into a MatMul), and the package's initializer of the same name is
read back. The graphs are then exported again from the recovered networks and must come out
byte-identical to the package's (sha256), or the import fails. Needs `python3-onnx` (Debian), a
research tool only. Not recovered, because no graph holds them: the autoencoder's encoder half (only
the latents stage uses it) and the encoder's training heads (lm_sweep.py's proxy score)."""
import argparse
import base64
import hashlib
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import emu_tiny  # noqa: E402,F401  (first: picks OpenBLAS's kernels before torch loads it)
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from emu_tiny.common import path  # noqa: E402
from emu_tiny.export import Networks, export_package, sha256  # noqa: E402
from emu_tiny.modules import (AEConfig, Autoencoder, CausalLM, DirectHead, EncoderConfig, LatentUNet, LMConfig,  # noqa: E402
                              UNetConfig, VisualEncoder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# graph file → the networks whose parameters it holds
GRAPHS = {"visual_encoder.onnx": ("encoder",), "embed_tokens.onnx": ("lm",), "project_up.onnx": ("lm",),
          "image_summary.onnx": ("lm",), "decoder_model_merged.onnx": ("lm",), "unet.onnx": ("unet",),
          "vae_decoder.onnx": ("ae",), "direct_decoder.onnx": ("direct_head", "ae")}


def networks(manifest: dict) -> Networks:
    """Untrained networks of the package's shapes (the configs' defaults, checked against the manifest)."""
    ec, ac = EncoderConfig(), AEConfig()
    m = manifest
    assert m["encoder"]["dim"] == ec.dim and m["encoder"]["tokens_per_image"] == ec.tokens, "encoder config differs from the package"
    lm = m["lm"]
    lc = LMConfig(vocab=lm["vocab"], dim=ec.dim, image_summary="attn" if "image_summary" in lm else "", layers=lm["layers"])
    assert (lc.hidden, lc.heads, lc.head_dim) == (lm["hidden"], lm["heads"], lm["head_dim"]), "LM config differs from the package"
    uc = UNetConfig(context_dim=ec.dim)
    assert m["decoders"]["diffusion"]["latent_shape"] == [uc.latent_channels, ac.latent_size, ac.latent_size]
    return Networks(VisualEncoder(ec), CausalLM(lc), Autoencoder(ac), LatentUNet(uc), DirectHead(uc, tokens=ec.tokens),
                    torch.zeros(ec.tokens, ec.dim))


def initializers(file: str) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(file).graph.initializer}


def key(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", default=os.path.join(ROOT, "models", "emu2-tiny"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    manifest = json.load(open(os.path.join(a.package, "manifest.json")))
    nets = networks(manifest)
    owners = ("encoder", "lm", "ae", "unet", "direct_head")
    # Float buffers too (the autoencoder's latent statistics); those no graph holds as such (RoPE's
    # frequencies, folded into tables) get their initial values back.
    tensors = {o: dict(getattr(nets, o).named_parameters(), **{n: b for n, b in getattr(nets, o).named_buffers()
                                                                 if b.is_floating_point()}) for o in owners}
    initial = {(o, n): t.detach().clone() for o in owners for n, t in tensors[o].items()}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for o in owners:
            for t in tensors[o].values():
                t.copy_(torch.randn(t.shape, generator=g))
    tokenizer = os.path.join(a.package, "tokenizer.json")
    found = set()
    with tempfile.TemporaryDirectory() as tmp:
        export_package(nets, tmp, tokenizer, "template", {})
        for graph, holders in GRAPHS.items():
            if not os.path.exists(os.path.join(a.package, graph)):
                continue
            tmpl, shipped = initializers(os.path.join(tmp, graph)), initializers(os.path.join(a.package, graph))
            by_key = {}
            for n, v in tmpl.items():
                by_key.setdefault(key(v), n)
            for owner in holders:
                for pname, p in tensors[owner].items():
                    t = p.detach().numpy()
                    n = by_key.get(key(t))
                    if n is not None:
                        val = shipped[n]
                    elif t.ndim == 2 and (n := by_key.get(key(t.T))) is not None:
                        val = shipped[n].T
                    else:
                        continue
                    if val.size != p.numel():
                        raise SystemExit(f"{graph}: {owner}.{pname} {tuple(p.shape)} matched initializer {n!r}, "
                                         f"{tuple(val.shape)} in the package")
                    found.add((owner, pname))
                    val = val.reshape(tuple(p.shape))  # the exporter may fold it into a broadcastable shape (GroupNorm's affine)
                    with torch.no_grad():
                        p.copy_(torch.from_numpy(np.ascontiguousarray(val)))
        # The unconditional tokens classifier-free guidance subtracts: the DDIM parity case's input.
        case = json.load(open(os.path.join(a.package, "parity", "ddim_4_steps_g2.json")))
        neg = case["inputs"]["negative_hidden_states"]
        nets.null.copy_(torch.from_numpy(np.frombuffer(base64.b64decode(neg["data_b64"]), dtype="<f4").reshape(neg["dims"])[0].copy()))
    # Parameters no graph holds (the autoencoder's encoder half) stay random; any other is an error.
    params = {(o, n) for o in owners for n, _ in getattr(nets, o).named_parameters()}
    lost = sorted(k for k in params - found if not (k[0] == "ae" and k[1].startswith("encoder.")))
    if lost:
        raise SystemExit(f"{len(lost)} parameters found in no graph, e.g. {lost[:8]}")
    with torch.no_grad():
        for (o, n), t in initial.items():
            if (o, n) not in params and (o, n) not in found:
                tensors[o][n].copy_(t)
    with tempfile.TemporaryDirectory() as tmp:
        export_package(nets, tmp, tokenizer, "check", {})
        for graph in GRAPHS:
            if os.path.exists(os.path.join(a.package, graph)):
                same = sha256(os.path.join(tmp, graph)) == manifest["files"][graph]["sha256"]
                print(f"{graph}: {'byte-identical' if same else 'DIFFERS'}")
                if not same:
                    raise SystemExit(f"{graph} re-exported from the recovered weights differs from the package's")
    os.makedirs(path(), exist_ok=True)
    note = f"recovered from {a.package} {manifest['version']} by research/import_package.py"
    torch.save({"encoder": nets.encoder.state_dict(), "config": nets.encoder.cfg.__dict__, "note": note}, path("encoder.pt"))
    torch.save({"model": nets.lm.state_dict(), "config": nets.lm.cfg.__dict__, "note": note}, path("lm.pt"))
    torch.save({"ae": nets.ae.state_dict(), "config": nets.ae.cfg.__dict__, "note": note + " (encoder half random)"}, path("autoencoder.pt"))
    torch.save({"unet": nets.unet.state_dict(), "config": nets.unet.cfg.__dict__, "null": nets.null, "note": note}, path("unet.pt"))
    torch.save({"head": nets.direct_head.state_dict(), "config": nets.unet.cfg.__dict__, "tokens": nets.encoder.cfg.tokens,
                "note": note}, path("direct.pt"))
    print(f"wrote encoder.pt, lm.pt, autoencoder.pt, unet.pt, direct.pt in {path()}")


if __name__ == "__main__":
    main()
