#!/usr/bin/env bash
# Run amd_jax on a Cloud TPU VM slice: create-or-reuse, copy code, install, run on all workers, tail logs.
#   launch/tpu_vm.sh --name NAME --zone ZONE [--project P] --slice v5p-64 --config configs/X.py \
#       --workdir gs://B/D [--config.key=value ...] [--spot] [--runtime VERSION] [--git-ref REF [--git-url URL]]
#       [--module amd_jax.evaluate] [--dry-run]
#   launch/tpu_vm.sh --name NAME --zone ZONE [--project P] --logs | --delete [--dry-run]
# --dry-run prints every command (one per line, shell-quoted) instead of running it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"; REPO="$(dirname "$HERE")"
NAME="" ZONE="" PROJECT="" SLICE="v5p-8" CONFIG="" WORKDIR="" RUNTIME="" SPOT=0 DRY=0 ACTION=up
GIT_REF="" GIT_URL="" MODULE="amd_jax.train" OVERRIDES=()
die() { echo "tpu_vm.sh: error: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name|--zone|--project|--slice|--config|--workdir|--runtime|--git-ref|--git-url|--module)
      [[ $# -ge 2 ]] || die "$1 needs a value"; k="${1#--}"; k="${k//-/_}"; printf -v "${k^^}" '%s' "$2"; shift 2;;
    --name=*|--zone=*|--project=*|--slice=*|--config=*|--workdir=*|--runtime=*|--git-ref=*|--git-url=*|--module=*)
      k="${1%%=*}"; k="${k#--}"; k="${k//-/_}"; printf -v "${k^^}" '%s' "${1#*=}"; shift;;
    --config.*) OVERRIDES+=("$1"); shift;;
    --spot) SPOT=1; shift;;
    --dry-run) DRY=1; shift;;
    --delete) ACTION=delete; shift;;
    --logs) ACTION=logs; shift;;
    *) die "unknown argument '$1' (overrides must look like --config.key=value)";;
  esac
done
q() { if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi; }
qall() { local out=() a; for a in "$@"; do out+=("$(q "$a")"); done; echo "${out[*]}"; }
run() { if [[ $DRY == 1 ]]; then qall "$@"; else "$@"; fi; }
[[ -n "$NAME" ]] || die "--name is required"
[[ -n "$ZONE" ]] || die "--zone is required"
LOC=(--zone "$ZONE"); [[ -n "$PROJECT" ]] && LOC+=(--project "$PROJECT")
TPU=(gcloud compute tpus tpu-vm)
LOG='~/amd_jax_run.log'
if [[ $ACTION == delete ]]; then run "${TPU[@]}" delete "$NAME" "${LOC[@]}" --quiet; exit 0; fi
if [[ $ACTION == logs ]]; then run "${TPU[@]}" ssh "$NAME" "${LOC[@]}" --worker=0 --command "tail -n +1 -F $LOG"; exit 0; fi

read -r SLICE _ _ _ _ DEFAULT_RUNTIME < <(python3 "$HERE/slices.py" "$SLICE") || exit 2
RUNTIME="${RUNTIME:-$DEFAULT_RUNTIME}"
[[ -n "$CONFIG" ]] || die "--config is required"
[[ "$WORKDIR" == gs://* ]] || die "--workdir must be a gs:// path every worker can reach, got '${WORKDIR}'"
[[ -n "$GIT_REF" || -f "$REPO/$CONFIG" ]] || die "config file $REPO/$CONFIG not found"
if [[ -n "$GIT_REF" && -z "$GIT_URL" ]]; then GIT_URL="$(git -C "$REPO" remote get-url origin 2>/dev/null)" \
  || die "--git-ref needs --git-url (no 'origin' remote)"; fi

# 1. create the slice unless it exists (dry-run shows both commands; create runs only if describe fails)
CREATE=("${TPU[@]}" create "$NAME" "${LOC[@]}" --accelerator-type "$SLICE" --version "$RUNTIME")
[[ $SPOT == 1 ]] && CREATE+=(--spot)
if [[ $DRY == 1 ]]; then run "${TPU[@]}" describe "$NAME" "${LOC[@]}"; run "${CREATE[@]}"
elif "${TPU[@]}" describe "$NAME" "${LOC[@]}" >/dev/null 2>&1; then echo "reusing TPU VM $NAME" >&2
else "${CREATE[@]}"; fi

# 2. code on every worker: the local tree (uncommitted edits included) or a git ref
if [[ -n "$GIT_REF" ]]; then
  FETCH="rm -rf ~/amd_jax && git clone -q $(q "$GIT_URL") ~/amd_jax && git -C ~/amd_jax checkout -q $(q "$GIT_REF")"
else
  TGZ="/tmp/amd_jax-$NAME.tgz"
  run tar -C "$REPO" -czf "$TGZ" --exclude=__pycache__ amd_jax configs launch requirements.txt pyproject.toml
  run "${TPU[@]}" scp "$TGZ" "$NAME:/tmp/amd_jax.tgz" "${LOC[@]}" --worker=all
  FETCH="rm -rf ~/amd_jax && mkdir -p ~/amd_jax && tar -xzf /tmp/amd_jax.tgz -C ~/amd_jax"
fi
# 3. Python 3.11 venv (the TPU images ship 3.10) with jax[tpu] in place of the CPU jaxlib pin
INSTALL="python3 -m pip install -q --user uv && ~/.local/bin/uv venv -q --allow-existing -p 3.11 ~/amd_venv"
INSTALL+=" && grep -v '^jaxlib' ~/amd_jax/requirements.txt > /tmp/amd_req.txt && ~/.local/bin/uv pip install -q"
INSTALL+=" -p ~/amd_venv/bin/python -r /tmp/amd_req.txt 'jax[tpu]==0.10.2'"
INSTALL+=" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
run "${TPU[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command "set -e; $FETCH && $INSTALL"
# 4. same command on every worker, detached (survives a dropped ssh); refuses if a previous run is alive
CMD="~/amd_venv/bin/python $(qall -m "$MODULE" "--config=$CONFIG" "--workdir=$WORKDIR" ${OVERRIDES[@]+"${OVERRIDES[@]}"})"
START="if [ -f ~/amd_jax_run.pid ] && kill -0 \$(cat ~/amd_jax_run.pid) 2>/dev/null; then"
START+=" echo \"\$(hostname): previous run still alive (pid \$(cat ~/amd_jax_run.pid))\" >&2; exit 1; fi;"
START+=" cd ~/amd_jax && USE_TF=0 nohup $CMD > $LOG 2>&1 < /dev/null & echo \$! > ~/amd_jax_run.pid"
run "${TPU[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command "$START"
# 5. stream worker 0's log (Ctrl-C stops the tail, not the run; --logs reattaches)
run "${TPU[@]}" ssh "$NAME" "${LOC[@]}" --worker=0 --command "tail -n +1 -F $LOG"
