#!/usr/bin/env bash
# Pretraining on the GPUs of one host.
#
#   launch/multi_gpu.sh -- --config=configs/pretrain.py:size=base --workdir=/data/runs/bert-base
#   launch/multi_gpu.sh --processes=8 -- --config=... --workdir=...      # one process per GPU
#
# --processes=1 (default): one JAX process drives every visible GPU (the usual JAX way on one host).
# --processes=N: N processes on this host, each with its share of the GPUs (--local_device_ids), joined
#   through a coordinator on localhost:--port; each writes <log_dir>/process_<i>.log, and when one
#   fails the others are stopped. Same results as one process (docs/scaling.md); useful to mimic a
#   multi-host job on one machine.
#
# Options (or the upper-case environment variable): --processes (1), --gpus (0,1,... default: from
# CUDA_VISIBLE_DEVICES or nvidia-smi), --port (8476), --log_dir (logs), --dry_run (or DRY_RUN=1): print
# the environment it sets and the commands instead of running them. PYTHON=path picks the interpreter
# (default python3). XLA_FLAGS, when unset, gets the GPU flags below (shown as an `export` line, also on
# stderr when running). Arguments after `--` go to launch.pretrain.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }

PROCESSES="${PROCESSES:-1}"
GPUS="${GPUS:-}"
PORT="${PORT:-8476}"
LOG_DIR="${LOG_DIR:-logs}"
DRY_RUN="${DRY_RUN:-0}"
PYTHON="${PYTHON:-python3}"
TRAIN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage 0 ;;
    --processes=*) PROCESSES="${1#*=}" ;;
    --gpus=*) GPUS="${1#*=}" ;;
    --port=*) PORT="${1#*=}" ;;
    --log_dir=*) LOG_DIR="${1#*=}" ;;
    --dry_run) DRY_RUN=1 ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    *) echo "multi_gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$PROCESSES" =~ ^[1-9][0-9]*$ ]] || { echo "multi_gpu.sh: --processes must be a positive integer" >&2; exit 2; }

# Overlap collectives with compute; keep cuBLAS for matmuls (faster than Triton GEMMs for BERT shapes).
export XLA_FLAGS="${XLA_FLAGS:---xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_enable_triton_gemm=false}"

quote() {  # shell-quotes each argument that needs it
  local arg out=()
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$arg"); else out+=("${arg@Q}"); fi
  done
  echo "${out[*]}"
}

if [[ -z "$GPUS" ]]; then
  if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    GPUS="$(seq -s, 0 $(( $(tr ',' '\n' <<< "$CUDA_VISIBLE_DEVICES" | wc -l) - 1 )))"
  elif command -v nvidia-smi > /dev/null; then
    GPUS="$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, -)"
  fi
fi
IFS=, read -r -a GPU_LIST <<< "$GPUS"
if [[ "$DRY_RUN" == 1 ]]; then echo "export XLA_FLAGS=$(quote "$XLA_FLAGS")"; else echo "+ export XLA_FLAGS=$(quote "$XLA_FLAGS")" >&2; fi

if (( PROCESSES == 1 )); then
  COMMAND=("$PYTHON" -m launch.pretrain "${TRAIN_ARGS[@]}")
  if [[ "$DRY_RUN" == 1 ]]; then quote "${COMMAND[@]}"; exit 0; fi
  exec "${COMMAND[@]}"
fi

if (( ${#GPU_LIST[@]} > 0 && ${#GPU_LIST[@]} % PROCESSES != 0 )); then
  echo "multi_gpu.sh: ${#GPU_LIST[@]} GPUs ($GPUS) do not split evenly over $PROCESSES processes" >&2
  exit 2
fi
PER_PROCESS=$(( ${#GPU_LIST[@]} / PROCESSES ))
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$LOG_DIR"
PIDS=()
stop_all() { for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null || true; done; }
trap 'stop_all' INT TERM
for (( i = 0; i < PROCESSES; i++ )); do
  COMMAND=("$PYTHON" -m launch.pretrain --coordinator_address="localhost:$PORT" --num_processes="$PROCESSES"
           --process_id="$i")
  if (( PER_PROCESS > 0 )); then
    COMMAND+=(--local_device_ids="$(IFS=,; echo "${GPU_LIST[*]:$(( i * PER_PROCESS )):$PER_PROCESS}")")
  fi
  COMMAND+=("${TRAIN_ARGS[@]}")
  if [[ "$DRY_RUN" == 1 ]]; then quote "${COMMAND[@]}"; continue; fi
  echo "+ $(quote "${COMMAND[@]}") > $LOG_DIR/process_$i.log" >&2
  "${COMMAND[@]}" > "$LOG_DIR/process_$i.log" 2>&1 &
  PIDS+=($!)
done
[[ "$DRY_RUN" == 1 ]] && exit 0

# Wait for all; the first failure stops the others (they would hang in a collective otherwise).
STATUS=0
REMAINING=("${PIDS[@]}")
while (( ${#REMAINING[@]} > 0 )); do
  RUNNING=()
  for pid in "${REMAINING[@]}"; do
    if kill -0 "$pid" 2> /dev/null; then RUNNING+=("$pid"); continue; fi
    if ! wait "$pid" && (( STATUS == 0 )); then
      STATUS=1
      echo "multi_gpu.sh: process $pid failed; stopping the others (logs in $LOG_DIR/)" >&2
      stop_all
    fi
  done
  REMAINING=("${RUNNING[@]}")
  (( ${#REMAINING[@]} == 0 )) || sleep 1
done
exit "$STATUS"
