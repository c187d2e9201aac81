#!/usr/bin/env bash
# Device check (issue 16): on one H100/H200, BERT-base and BERT-large in bf16 at S=128 (pairs, NSP) and at
# S=512 packed (rows of whole sequences), the JAX train step against transformers' BertForPreTraining
# (bf16 autocast, SDPA) in the same run (bench/bench_step.py, alternating timed steps), then one table:
# tokens/s, MFU against 989 TFLOP/s (dense bf16 peak; FLOPs from ModelConfig.train_flops_per_token),
# compile seconds (JAX: lower + compile; PyTorch: the first eager step), peak device memory, loss.
# Runs in < 8 min on one H200 (4 runs, 10 timed steps each). Attention dropout is 0 (so that JAX's fused
# attention and SDPA's flash kernel both run); hidden dropout stays BERT's 0.1.
#
#   bash bench/device_check.sh                      # on the GPU machine
#   DEVICE_CHECK_TINY=1 bash bench/device_check.sh  # tiny CPU mode (size tiny, 2 steps): the smoke test
#
# Environment: PYTHON (default .venv/bin/python, else python), DEVICE_CHECK_OUT (the jsonl written, default
# bench/results/device_check.jsonl; tiny mode: a temporary file), DEVICE_CHECK_PEAK_TFLOPS (default 989).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
PEAK=${DEVICE_CHECK_PEAK_TFLOPS:-989}
if [ "${DEVICE_CHECK_TINY:-0}" = "1" ]; then
  OUT=${DEVICE_CHECK_OUT:-$(mktemp /tmp/device_check.XXXXXX.jsonl)}
  SIZES="tiny"
  SHORT="--batch_size=2 --seq_len=32 --max_predictions=5"
  LONG="--batch_size=2 --seq_len=64 --max_predictions=10"
  COMMON="--steps=2 --warmup=0 --torch_device=cpu --torch_threads=1 --mesh=data=1"
  export JAX_PLATFORMS=cpu XLA_FLAGS="--xla_backend_optimization_level=0"  # one CPU device, quick compiles
else
  OUT=${DEVICE_CHECK_OUT:-bench/results/device_check.jsonl}
  SIZES="base large"
  SHORT="--batch_size=256 --seq_len=128 --max_predictions=20"
  LONG="--batch_size=64 --seq_len=512 --max_predictions=77"
  COMMON="--steps=10 --warmup=3 --torch_device=cuda"
fi
rm -f "$OUT" "$OUT".part*
echo "device check: sizes=$SIZES out=$OUT $(uptime)"
run=0
for size in $SIZES; do
  for shape in "$SHORT" "$LONG --packed"; do
    run=$((run + 1))
    # shellcheck disable=SC2086  # word splitting of the flag lists is meant
    set -- "$PYTHON" -m bench.bench_step --arch=bert --size="$size" $shape $COMMON --dtype=bfloat16 \
      --attention_dropout=0.0 --out="$OUT.part$run"
    if [ "${DEVICE_CHECK_TINY:-0}" = "1" ]; then
      "$@" > "$OUT.log$run" 2>&1 &  # tiny mode times nothing that matters: the runs share the CPUs
    else
      "$@"
    fi
  done
done
wait  # every background run; a failed one fails the check below (its part file is missing)
for i in $(seq 1 "$run"); do
  [ -f "$OUT.part$i" ] || { cat "$OUT.log$i" >&2; echo "device check: run $i failed" >&2; exit 1; }
  cat "$OUT.part$i" >> "$OUT"
  [ -f "$OUT.log$i" ] && grep -E '^(bert|  )' "$OUT.log$i" || true
done
rm -f "$OUT".part* "$OUT".log*
echo "=== device check (bf16, MFU against $PEAK TFLOP/s) ==="
"$PYTHON" -m bench.bench_step --table="$OUT" --peak_tflops="$PEAK"
