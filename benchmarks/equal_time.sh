#!/usr/bin/env bash
# Equal-time recipe comparison on this CPU (issue 11, part 3): each variant trains from scratch
# for the same wall time ($MINUTES, learning rate decaying over it), with the same held-out
# quick eval (16 validation scenes) every $EVAL steps. Run on an otherwise idle machine:
#
#   bash benchmarks/equal_time.sh && python benchmarks/equal_time_summary.py
#
# Curves: runs/equal_time/<variant>/log.jsonl; summary: benchmarks/results/equal_time.json.
set -euo pipefail
MINUTES=${MINUTES:-10}
EVAL=${EVAL:-40}
ROOT=${ROOT:-runs/equal_time}
common=(--steps 100000 --schedule time --time-limit "$MINUTES" --eval-every "$EVAL"
        --easy-fraction 0.0005 --warmup-steps 30 --restart)
# A: v1's recipe (ViT nano, 4 images x 8 targets, fp32, scenes drawn in the training process)
samkit train --config configs/nano_v1.json --out "$ROOT/A_vit_v1_recipe" "${common[@]}" \
  --images-per-step 4 --targets-per-image 8
# B: the same recipe, TinyViT encoder
samkit train --config configs/nano_v2.json --out "$ROOT/B_tinyvit" "${common[@]}" \
  --images-per-step 4 --targets-per-image 8
# C: TinyViT with the throughput levers: 16 targets per image, a scene worker, bf16 autocast
#    where the CPU has AVX-512 BF16 / AMX (else fp32)
bf16=()
grep -q -E 'avx512_bf16|amx_bf16' /proc/cpuinfo && bf16=(--bf16)
samkit train --config configs/nano_v2.json --out "$ROOT/C_tinyvit_levers" "${common[@]}" \
  --images-per-step 4 --targets-per-image 16 --workers 1 "${bf16[@]}"
