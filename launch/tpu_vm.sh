#!/usr/bin/env bash
# Run amd_jax on a Cloud TPU VM slice: check the config here, create-or-reuse, copy code, install, run on all
# workers, tail logs. `launch/tpu_vm.sh --help` prints the usage (the text of usage() below).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"; REPO="$(dirname "$HERE")"
NAME="" ZONE="" PROJECT="" SLICE="v5p-8" CONFIG="" WORKDIR="" RUNTIME="" SPOT=0 DRY=0 ACTION=up CHECK=1
GIT_REF="" GIT_URL="" MODULE="amd_jax.train" OVERRIDES=()
die() { echo "tpu_vm.sh: error: $*" >&2; exit 2; }
usage() { cat <<'EOF'
Run amd_jax on a Cloud TPU VM slice: check the config here, create-or-reuse the slice, copy the code, install,
run the same command on all workers, tail worker 0's log.

  launch/tpu_vm.sh --name NAME --zone ZONE [--project P] --slice v5p-64 --config configs/X.py \
      --workdir gs://B/D [--config.key=value ...] [--spot] [--runtime VERSION] [--git-ref REF [--git-url URL]]
      [--module amd_jax.evaluate] [--no-check] [--dry-run]
  launch/tpu_vm.sh --name NAME --zone ZONE [--project P] --logs | --delete [--dry-run]

  --name, --zone, --project   the TPU VM and where it lives (gcloud compute tpus tpu-vm)
  --slice                     accelerator type, e.g. v5p-64 = 32 chips, 8 hosts (python3 launch/slices.py v5p-64)
  --config, --config.KEY=V    the run's config file (relative to the repo root) and its overrides
  --workdir                   gs:// folder every worker writes and resumes from
  --module                    amd_jax.train (default) or amd_jax.evaluate
  --runtime                   TPU VM software version (default by family: v4 tpu-ubuntu2204-base, v5p
                              v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite)
  --spot                      create a Spot slice
  --git-ref, --git-url        clone this ref on every worker instead of shipping the local tree
  --no-check                  skip the local config check (below)
  --dry-run                   print every command (one per line, shell-quoted) instead of running it
  --logs, --delete            re-attach to worker 0's log; delete the slice
  -h, --help                  this text

Before any command (dry runs too), the config is loaded and validated on this machine with the slice's device
and host counts (launch/preflight.py: every check that needs no TPU, the task's required inputs included; gs://
paths are not checked for existence). It needs the project's Python: $AMD_JAX_PYTHON, else .venv/bin/python in
the repo, else python3. With --git-ref the local tree's code checks the config. Errors are one line, exit code 2.
EOF
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0;;
    --name|--zone|--project|--slice|--config|--workdir|--runtime|--git-ref|--git-url|--module)
      [[ $# -ge 2 ]] || die "$1 needs a value"; k="${1#--}"; k="${k//-/_}"; printf -v "${k^^}" '%s' "$2"; shift 2;;
    --name=*|--zone=*|--project=*|--slice=*|--config=*|--workdir=*|--runtime=*|--git-ref=*|--git-url=*|--module=*)
      k="${1%%=*}"; k="${k#--}"; k="${k//-/_}"; printf -v "${k^^}" '%s' "${1#*=}"; shift;;
    --config.*) OVERRIDES+=("$1"); shift;;
    --spot) SPOT=1; shift;;
    --dry-run) DRY=1; shift;;
    --no-check) CHECK=0; shift;;
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
# 0. the config loaded and validated here, as the workers will (launch/preflight.py), before anything is shipped
if [[ $CHECK == 1 && ( -z "$GIT_REF" || -f "$REPO/$CONFIG" ) ]]; then
  PY="${AMD_JAX_PYTHON:-}"
  if [[ -z "$PY" ]]; then if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi; fi
  if ! CHECKED="$("$PY" "$HERE/preflight.py" --slice "$SLICE" --config "$CONFIG" \
                  ${OVERRIDES[@]+"${OVERRIDES[@]}"} 2>&1)"; then
    ERR="$(grep -m1 '^preflight: error: ' <<<"$CHECKED" | sed 's/^preflight: error: //')" \
      || ERR="the config check ($PY launch/preflight.py) failed: $(tail -n1 <<<"$CHECKED")"
    die "$ERR (--no-check skips this check)"
  fi
  grep '^preflight: ' <<<"$CHECKED" | sed 's/^preflight: /tpu_vm.sh: /' >&2 || true
fi

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
