#!/usr/bin/env bash
# Rebuilds emu2-tiny from scratch on a 2-core CPU: data → (encoder ∥ autoencoder) → LM (both cores)
# → decoders (direct ∥ UNet) → evaluation → package. Every stage resumes from its checkpoint in
# $EMU_TRAIN_DIR, so re-running after an interruption continues where it stopped. Seeds are fixed
# (see README.md beside this file).
set -euo pipefail
cd "$(dirname "$0")/../.."
export EMU_TRAIN_DIR="${EMU_TRAIN_DIR:-$HOME/.cache/emu2-tiny}"
# Debian's torch links OpenBLAS; one BLAS thread per process avoids oversubscribing 2 cores.
export OPENBLAS_NUM_THREADS=1
PY=/usr/bin/python3
D="$EMU_TRAIN_DIR/data"
mkdir -p "$EMU_TRAIN_DIR/logs"
stamp() { date +%s; }
t0=$(stamp)

[ -f "$D/train/meta.json" ] || npm run -s world -- dataset --split train --out "$D/train"
[ -f "$D/eval/meta.json" ] || npm run -s world -- dataset --split eval --per-task 200 --out "$D/eval"
# The autoencoder needs only the images: it trains on one core while the encoder takes the other.
if [ ! -f "$EMU_TRAIN_DIR/autoencoder.pt" ]; then
  $PY models/training/train.py autoencoder --threads 1 > "$EMU_TRAIN_DIR/logs/autoencoder.out" 2>&1 &
  ae_pid=$!
fi
[ -f "$EMU_TRAIN_DIR/encoder.pt" ] || $PY models/training/train.py encoder --threads 1
if [ -n "${ae_pid:-}" ]; then wait "$ae_pid"; fi
[ -f "$D/train/embeds.npy" ] || $PY models/training/train.py embed --threads 2

# The LM trains data parallel on both cores: two processes, half of each batch each, gradients
# averaged (train.py lm --procs 2; model card "Rebuild"). Then the decoders: the latents, then the
# direct head (one core) beside the UNet (the other).
[ -f "$EMU_TRAIN_DIR/lm.pt" ] || $PY models/training/train.py lm --threads 1 --procs 2
[ -f "$D/train/latents.npy" ] || $PY models/training/train.py latents --threads 2
if [ ! -f "$EMU_TRAIN_DIR/direct.pt" ]; then
  $PY models/training/train.py direct --threads 1 > "$EMU_TRAIN_DIR/logs/direct.out" 2>&1 &
  direct_pid=$!
fi
[ -f "$EMU_TRAIN_DIR/unet.pt" ] || $PY models/training/train.py unet --threads 1
if [ -n "${direct_pid:-}" ]; then wait "$direct_pid"; fi
echo "training took $(( $(stamp) - t0 )) s"

for dec in diffusion direct; do
  $PY models/training/evaluate.py --eval "$D/eval" --out "$EMU_TRAIN_DIR/eval-$dec" --decoder "$dec" \
    --e2e "$EMU_TRAIN_DIR/e2e.pt"
  npm run -s world -- score "$EMU_TRAIN_DIR/eval-$dec"
done
$PY models/training/export.py --card models/training/card.json --e2e "$EMU_TRAIN_DIR/e2e.pt"
echo "rebuild took $(( $(stamp) - t0 )) s"
