# What tools/dist_train.sh and tools/dist_test.sh share; they source this file.
#
# launch TOOL N ARGS...: runs tools/TOOL under torchrun with N-th of ARGS as the
# number of processes on this node, the ones before it as TOOL's positional
# arguments (config, checkpoint) and the ones after it as TOOL's options.
# The caller's lines 2-6 are its usage.
set -euo pipefail

launch() {
    local tool=$1 gpus_at=$2
    shift 2
    case "${1:-}" in -h|--help) sed -n '2,6s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
    if [ $# -lt "$gpus_at" ]; then sed -n '2,6s/^# \{0,1\}//p' "$0" >&2; exit 2; fi
    local positional=("${@:1:$((gpus_at - 1))}") gpus=${!gpus_at}
    shift "$gpus_at"
    local root python=${PYTHON:-}
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [ -z "$python" ]; then
        if [ -x "$root/.venv/bin/python" ]; then python=$root/.venv/bin/python; else python=python3; fi
    fi
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
    exec "$python" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --master_port="${PORT:-29500}" \
        --nproc_per_node="$gpus" \
        "$root/tools/$tool" "${positional[@]}" --launcher pytorch "$@"
}
