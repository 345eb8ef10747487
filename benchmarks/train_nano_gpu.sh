#!/usr/bin/env bash
# nano's GPU recipe: one command, one GPU, a fixed wall-time budget.
#
#   OUT=/some/dir bash benchmarks/train_nano_gpu.sh   # on an H100: under 9 minutes in all
#
# Trains configs/nano_v2.json (TinyViT encoder) from scratch on synthetic scenes drawn by
# $WORKERS processes, bf16 autocast, learning rate decaying over $MINUTES of wall time. Every
# minute the weights (split in parts under 16 MiB: `cat nano_v2.safetensors.part* > w`), the
# log and the summary are copied to $OUT, so a run cut short still returns a model. At the
# end it prints `samkit eval` on 150 held-out scenes (the model card's command, without the
# slow automatic rows). INIT=path.safetensors starts from those weights instead of scratch.
# Wheels missing on the GPU machine (pycocotools) travel in .whl/ (device README).
set -uo pipefail
OUT=${OUT:-/tmp/nano_gpu_out}
MINUTES=${MINUTES:-7}
WORKERS=${WORKERS:-14}
RUN=${RUN:-/tmp/nano_gpu_run}
EXTRA=${EXTRA:-}  # more `samkit train` flags (they override the ones below)
DEVICE=${DEVICE:-cuda}
HELDOUT=${HELDOUT:-150}
mkdir -p "$OUT" "$RUN"
source benchmarks/gpu_env.sh
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc; df -h /dev/shm | tail -1
  python3 -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$OUT/machine.txt"

publish() {  # copy the run's latest weights/log to $OUT atomically, in parts < 16 MiB
  local w="$RUN/nano_v2.safetensors"
  [ -f "$w" ] || return 0
  mkdir -p "$OUT/.tmp" && cp "$w" "$OUT/.tmp/w" && (cd "$OUT/.tmp" && split -b 15M -d w part) \
    && for p in "$OUT"/.tmp/part*; do mv "$p" "$OUT/nano_v2.safetensors.$(basename "$p")"; done
  cp "$RUN/log.jsonl" "$OUT/train_log.jsonl" 2>/dev/null
  cp "$RUN/summary.json" "$OUT/summary.json" 2>/dev/null
  rm -rf "$OUT/.tmp"
}

# held-out scenes for the final eval, drawn while the model trains (SKIP_EVAL=1: neither,
# which leaves every CPU core to the scene workers; evaluate the returned weights elsewhere)
[ "${SKIP_EVAL:-0}" = 1 ] || python3 -m samkit data synth --n "$HELDOUT" -o /tmp/heldout >/tmp/synth.log 2>&1 &

init=()
[ -n "${INIT:-}" ] && init=(--init "$INIT")
train() {
  python3 -m samkit train --config configs/nano_v2.json --out "$RUN" --device "$DEVICE" --bf16 \
    --workers "$1" --images-per-step 32 --targets-per-image 16 --click-rounds 1 \
    --lr 1.5e-3 --warmup-steps 200 --steps 20000 --easy-fraction 0.015 --eval-every 500 \
    --schedule time --time-limit "$MINUTES" --checkpoint-minutes 1 "${init[@]}" $EXTRA
}
( while sleep 55; do publish; done ) &
publisher=$!
# GPU utilisation every 10 s, appended to machine.txt: is the step GPU-bound or waiting?
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 10 \
    >> "$OUT/machine.txt" 2>/dev/null &
  sampler=$!
fi
start=$(date +%s)
train "$WORKERS" 2>&1 | tr '\r' '\n' | grep -v "^train: " | tee "$OUT/train.txt" | tail -20
if [ ! -f "$RUN/summary.json" ] && [ $(( $(date +%s) - start )) -lt 120 ]; then
  echo "training failed early; retrying with fewer workers" | tee -a "$OUT/train.txt"
  rm -rf "$RUN"; mkdir -p "$RUN"
  train 4 2>&1 | tr '\r' '\n' | grep -v "^train: " | tee -a "$OUT/train.txt" | tail -20
fi
kill "$publisher" ${sampler:-} 2>/dev/null
publish
python3 - "$RUN/log.jsonl" <<'EOF' | tee "$OUT/throughput.txt"
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if not r.get("eval_only")]
t = rows[-1]["time_s"]
pairs = sum(r["pairs"] for r in rows)
print(f"{len(rows)} steps in {t:.0f} s: {len(rows) / t:.2f} steps/s, {pairs / t:.0f} pairs/s")
wait = sum(r.get("data_wait_s", 0) for r in rows)
print(f"waiting for scenes: {wait:.0f} s of {t:.0f} s (the rest is the training step)")
for r in rows:
    if "val_miou_box" in r:
        print(f"step {r['step']} ({r['time_s']:.0f} s): val box {r['val_miou_box']:.3f}, "
              f"point {r['val_miou_point']:.3f}")
EOF
wait
[ "${SKIP_EVAL:-0}" = 1 ] || python3 -m samkit eval /tmp/heldout/annotations.json --images /tmp/heldout/images \
  --checkpoint "$RUN/nano_v2.safetensors" --device "$DEVICE" --prompts point1,point5,box,box+point \
  -o "$OUT/eval.json" 2>&1 | tail -12
