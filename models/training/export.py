"""Writes the emu-package/1 folder (default models/emu2-tiny) from the trained checkpoints in
$EMU_TRAIN_DIR, or from freshly initialised networks with --random (the contract-only package)."""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emu_tiny  # noqa: E402,F401  (first: picks OpenBLAS's kernels before torch loads it)
import torch  # noqa: E402

from emu_tiny.export import export_package, load_trained, random_networks  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "emu2-tiny"))
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "models", "emu2-tiny", "tokenizer.json"))
    ap.add_argument("--random", action="store_true", help="export untrained networks (format only)")
    ap.add_argument("--card", default=None, help="JSON with default_decoder, default_guidance, training facts")
    ap.add_argument("--e2e", default=None, help="torch file of end-to-end parity cases (written by evaluate.py)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    card = json.load(open(a.card)) if a.card else {}
    if a.random:
        vocab = len(json.load(open(a.tokenizer))["model"]["vocab"])
        nets = random_networks(vocab)
        export_package(nets, a.out, a.tokenizer, "0.0.0-random", {"training": {"note": "random weights: format only"}})
    else:
        e2e = torch.load(a.e2e) if a.e2e else None
        export_package(load_trained(), a.out, a.tokenizer, card.get("version", "1.0.0"), card, e2e)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
