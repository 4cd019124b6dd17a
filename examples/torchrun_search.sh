#!/usr/bin/env bash
# One search across several processes: data parallel through torch.distributed, launched by torchrun.
#
#   examples/torchrun_search.sh [OUT] [NPROC]
#
# Every rank draws the same global batch (--batch-size, divisible by NPROC) and keeps its share;
# gradients are averaged, so every rank holds the same α and weights after every step, and rank 0
# alone writes OUT. On CPU the backend is gloo (one thread per process here); with --device cuda it
# is NCCL, one GPU per process. This runs at a tiny size: drop the key=value items for a real search.
set -euo pipefail
out=${1:-runs/torchrun-example}
nproc=${2:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
torchrun --nproc_per_node "$nproc" --master_port "${MASTER_PORT:-29500}" -m dnas search \
    --space nb201 --method darts --epochs 1 --batch-size 16 --quiet --out "$out" \
    channels=4 layers=1 max_images=64
cat "$out/genotype.json"
