#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG [GPUS] [train.py args...]
# GPUS (positional or env, default 1) is the number of processes on this node; without CUDA
# each one trains on the CPU over gloo. Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and
# PORT (or MASTER_PORT) on every node. PYTHON picks the interpreter (default: python).
set -euo pipefail

CONFIG=$1
shift
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    GPUS=$1
    shift
fi
GPUS=${GPUS:-1}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-${MASTER_PORT:-29500}}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$GPUS" \
    "$TOOLS_DIR/train.py" \
    "$CONFIG" \
    --launcher pytorch "$@"
