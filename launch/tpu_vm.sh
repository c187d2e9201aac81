#!/usr/bin/env bash
# Cloud TPU VM lifecycle for bert-jax: create, install, run on every worker, follow logs, stop, delete,
# and a spot/preemptible loop that recreates the VM after a preemption and resumes from a gs:// workdir.
#
#   launch/tpu_vm.sh create  --name=bert --zone=us-central2-b --accelerator_type=v4-32 --spot
#   launch/tpu_vm.sh install --name=bert --zone=us-central2-b       # copy this checkout, pip install
#   launch/tpu_vm.sh run     --name=bert --zone=us-central2-b --workdir=gs://BUCKET/bert-base \
#       -- --config=configs/pretrain.py:size=base,phase=1          # same command on all workers
#   launch/tpu_vm.sh start   ... (like run, detached)   /   launch/tpu_vm.sh logs --worker=0
#   launch/tpu_vm.sh stop|delete --name=bert --zone=us-central2-b
#   launch/tpu_vm.sh train   --name=bert --zone=us-central2-b --accelerator_type=v4-32 --spot \
#       --workdir=gs://BUCKET/bert-base -- --config=configs/pretrain.py:size=base,phase=1
#
# `train` loops: create -> install -> run; when the run ends without <workdir>/final_metrics.json saying
# it finished and the VM was preempted, it deletes the VM, creates a new one and reruns the same command,
# which resumes from the newest checkpoint in the workdir (up to --max_attempts). It deletes the VM at the end.
#
# Options (or the upper-case environment variable, e.g. ZONE=...): --name, --zone, --project,
# --accelerator_type (v4-8), --runtime_version (tpu-ubuntu2204-base), --spot | --preemptible,
# --workdir, --remote_dir (bert-jax), --worker (all; logs: 0), --max_attempts (20), --retry_wait_s (60),
# --module (launch.pretrain; e.g. launch.sweep for run/start, then --workdir is not passed),
# --dry_run (or DRY_RUN=1): print the commands instead of running them. Arguments after `--` go to
# the module. GCLOUD=path overrides the gcloud executable.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }

COMMAND="${1:-}"
[[ -z "$COMMAND" || "$COMMAND" == -h || "$COMMAND" == --help ]] && usage 0
shift
NAME="${NAME:-bert-jax}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
CAPACITY="${CAPACITY:-}"          # "", spot or preemptible
WORKDIR="${WORKDIR:-}"
REMOTE_DIR="${REMOTE_DIR:-bert-jax}"
WORKER="${WORKER:-}"
MAX_ATTEMPTS="${MAX_ATTEMPTS:-20}"
RETRY_WAIT_S="${RETRY_WAIT_S:-60}"
DRY_RUN="${DRY_RUN:-0}"
GCLOUD="${GCLOUD:-gcloud}"
MODULE="${MODULE:-launch.pretrain}"
TRAIN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --accelerator_type=*) ACCELERATOR_TYPE="${1#*=}" ;;
    --runtime_version=*) RUNTIME_VERSION="${1#*=}" ;;
    --spot) CAPACITY=spot ;;
    --preemptible) CAPACITY=preemptible ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --remote_dir=*) REMOTE_DIR="${1#*=}" ;;
    --worker=*) WORKER="${1#*=}" ;;
    --max_attempts=*) MAX_ATTEMPTS="${1#*=}" ;;
    --retry_wait_s=*) RETRY_WAIT_S="${1#*=}" ;;
    --module=*) MODULE="${1#*=}" ;;
    --dry_run) DRY_RUN=1 ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    *) echo "tpu_vm.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$ZONE" ]] || { echo "tpu_vm.sh: --zone (or ZONE) is required" >&2; exit 2; }
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Shell-quotes each argument that needs it (a command line one can paste).
quote() {
  local arg out=()
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$arg"); else out+=("${arg@Q}"); fi
  done
  echo "${out[*]}"
}

# Runs a command, traced on stderr; in a dry run only prints it on stdout.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then quote "$@"; else echo "+ $(quote "$@")" >&2; "$@"; fi
}

TPU=("$GCLOUD" compute tpus tpu-vm)
LOCATION=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && LOCATION+=(--project="$PROJECT")

ssh_workers() {  # ssh_workers WORKER COMMAND
  run "${TPU[@]}" ssh "$NAME" "${LOCATION[@]}" --worker="$1" --command="$2"
}

create() {
  local capacity=()
  [[ -n "$CAPACITY" ]] && capacity=(--"$CAPACITY")
  run "${TPU[@]}" create "$NAME" "${LOCATION[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" "${capacity[@]}"
}

install() {
  # This checkout's files (tracked and untracked, not ignored) go to every worker; then the pinned
  # requirements plus JAX's TPU runtime and gcsfs (gs:// workdirs and datasets).
  local tarball="${TMPDIR:-/tmp}/bert-jax-$NAME.tgz"
  run bash -c "cd $(quote "$REPO") && git ls-files -z -co --exclude-standard | tar --null -czf $(quote "$tarball") -T -"
  run "${TPU[@]}" scp "$tarball" "$NAME:bert-jax.tgz" "${LOCATION[@]}" --worker=all
  ssh_workers all "mkdir -p $REMOTE_DIR && tar -xzf bert-jax.tgz -C $REMOTE_DIR && cd $REMOTE_DIR && \
python3 -m pip install -q -r requirements.txt 'jax[tpu]==0.10.2' gcsfs==2026.10.1"
}

train_command() {  # the command line a worker runs, from its copy of the checkout
  local args=()
  [[ -n "$WORKDIR" && "$MODULE" == launch.pretrain ]] && args+=(--workdir="$WORKDIR")
  args+=("${TRAIN_ARGS[@]}")
  echo "cd $REMOTE_DIR && python3 -m $MODULE $(quote "${args[@]}")"
}

vm_state() {  # READY, PREEMPTED, ...; empty when the VM does not exist
  if [[ "$DRY_RUN" == 1 ]]; then quote "${TPU[@]}" describe "$NAME" "${LOCATION[@]}" --format='value(state)' >&2; return; fi
  "${TPU[@]}" describe "$NAME" "${LOCATION[@]}" --format='value(state)' 2>/dev/null || true
}

run_finished() {  # true when <workdir>/final_metrics.json says the run reached its last step
  if [[ "$DRY_RUN" == 1 ]]; then quote "$GCLOUD" storage cat "$WORKDIR/final_metrics.json"; return 0; fi
  "$GCLOUD" storage cat "$WORKDIR/final_metrics.json" 2>/dev/null | grep '"preempted": false' > /dev/null  # grep -q could SIGPIPE gcloud
}

train_loop() {
  [[ "$MODULE" == launch.pretrain ]] || { echo "tpu_vm.sh train: only for launch.pretrain (it watches final_metrics.json)" >&2; exit 2; }
  [[ "$WORKDIR" == gs://* ]] || { echo "tpu_vm.sh train: --workdir must be a gs:// path (it outlives the VM)" >&2; exit 2; }
  local attempt=1 state rc
  while true; do
    echo "=== attempt $attempt of $MAX_ATTEMPTS ===" >&2
    rc=1
    state="$(vm_state)"
    if [[ -n "$state" ]] || create; then
      if install; then
        if ssh_workers all "$(train_command)"; then rc=0; else rc=$?; fi
        if run_finished; then
          run "${TPU[@]}" delete "$NAME" "${LOCATION[@]}" --quiet
          echo "finished: $WORKDIR/final_metrics.json" >&2
          return 0
        fi
      fi
    else
      echo "create failed (no capacity?)" >&2
    fi
    state="$(vm_state)"
    if [[ "$state" == READY && "$rc" != 0 ]]; then
      echo "the run failed (exit $rc) on a healthy VM: not a preemption; stopping (the VM is kept for debugging)" >&2
      return 1
    fi
    if [[ -n "$state" && "$state" != READY ]]; then
      echo "VM state $state: preempted; deleting it, a new one resumes from $WORKDIR" >&2
      run "${TPU[@]}" delete "$NAME" "${LOCATION[@]}" --quiet
    fi
    attempt=$((attempt + 1))
    if (( attempt > MAX_ATTEMPTS )); then echo "gave up after $MAX_ATTEMPTS attempts" >&2; return 1; fi
    sleep "$RETRY_WAIT_S"
  done
}

case "$COMMAND" in
  create) create ;;
  install) install ;;
  run) ssh_workers "${WORKER:-all}" "$(train_command)" ;;
  start) ssh_workers "${WORKER:-all}" "$(train_command | sed 's/python3 -m/nohup python3 -m/') > \$HOME/train.log 2>&1 < /dev/null &" ;;
  logs) ssh_workers "${WORKER:-0}" "tail -n 200 -F \$HOME/train.log" ;;
  stop) run "${TPU[@]}" stop "$NAME" "${LOCATION[@]}" ;;
  delete) run "${TPU[@]}" delete "$NAME" "${LOCATION[@]}" --quiet ;;
  train) train_loop ;;
  *) echo "tpu_vm.sh: unknown command $COMMAND" >&2; usage 2 ;;
esac
