#!/usr/bin/env bash
# Distributed testing with torchrun: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
#
# GPUS is the number of processes on this node; on a machine without CUDA they
# run on CPU and test.py switches the backend to gloo. For several nodes set,
# on each node, NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR and PORT.
source "$(dirname "${BASH_SOURCE[0]}")/dist_launch.sh"
launch test.py 3 "$@"
