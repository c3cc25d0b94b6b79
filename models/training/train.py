"""emu2-tiny training entry point: `/usr/bin/python3 models/training/train.py STAGE [options]`.

Stages (each resumes from its checkpoint in $EMU_TRAIN_DIR/ckpt, default ~/.cache/emu2-tiny):
  encoder      visual encoder (attribute, position, box and pixel heads)
  embed        embed every training image with the frozen encoder
  autoencoder  64×64×3 ↔ 16×16×C latent autoencoder
  latents      the autoencoder's latents of every training image, cached beside the split (unet and
               direct compute them first if absent; run it first to train those two side by side)
  unet         latent diffusion UNet conditioned on encoder tokens
  direct       one-pass tokens → latent decoder
  lm           the multimodal causal LM (text + regression of visual tokens)
See README.md beside this file for the full rebuild and the seeds.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from emu_tiny.common import path, set_threads  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["encoder", "embed", "autoencoder", "latents", "unet", "direct", "lm"])
    ap.add_argument("--data", default=path("data", "train"), help="training split written by the world")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps (stage default if unset)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--procs", type=int, default=1,
                    help="lm only: data-parallel processes (one core each; the batch is split among them)")
    a = ap.parse_args()
    if a.procs > 1 and a.stage != "lm":
        ap.error("--procs is for the lm stage only")
    set_threads(a.threads)
    if a.stage == "encoder":
        from emu_tiny.encoder import train_encoder
        train_encoder(a.data, a.steps or 2500, a.batch or 64, a.seed)
    elif a.stage == "embed":
        from emu_tiny.encoder import embed_split
        embed_split(a.data)
    elif a.stage == "autoencoder":
        from emu_tiny.decoder import train_autoencoder
        train_autoencoder(a.data, a.steps or 1200, a.batch or 32, a.seed)
    elif a.stage == "latents":
        from emu_tiny.common import Log
        from emu_tiny.decoder import latents_for_split, load_autoencoder
        latents_for_split(a.data, load_autoencoder(), Log("latents"))
    elif a.stage == "unet":
        from emu_tiny.decoder import train_unet
        train_unet(a.data, a.steps or 2500, a.batch or 64, a.seed)
    elif a.stage == "direct":
        from emu_tiny.decoder import train_direct
        train_direct(a.data, a.steps or 2000, a.batch or 64, a.seed)
    elif a.stage == "lm":
        from emu_tiny.lm import train_lm
        train_lm(a.data, a.steps or 12500, a.batch or 64, a.seed, procs=a.procs)


if __name__ == "__main__":
    main()
