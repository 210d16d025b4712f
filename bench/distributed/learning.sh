#!/usr/bin/env bash
# Issue 24: Hopper-v5 to 1M steps through the Zoo (the trpo_ext block: 2 envs per process, VecNormalize), seed 0,
# one process, then 2 data-parallel ranks (torchrun, rendezvous on 127.0.0.1), one after the other on this machine.
#   bench/distributed/learning.sh            (from the repository root; writes bench/distributed/hopper-1M/)
# Each run's folder keeps the Zoo's evaluations.npz (10 deterministic episodes every 25k global steps) and rank 0's
# Monitor files (episode returns against wall-clock); times.txt records each run's start and end.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../../.venv/bin/python}"
out="$here/hopper-1M"
mkdir -p "$out"
export OMP_NUM_THREADS=1 MASTER_ADDR=127.0.0.1 GLOO_SOCKET_IFNAME=lo
common=(train --algo trpo_ext --env Hopper-v5 --seed 0 --eval-freq 25000 --eval-episodes 10 -n 1000000)
run() {
    local name="$1"; shift
    echo "$name start $(date +%s.%N)" >> "$out/times.txt"
    "$@" > "$out/$name.log" 2>&1
    echo "$name end $(date +%s.%N)" >> "$out/times.txt"
}
run one-process "$python" -m sb3_trpo_ext.zoo "${common[@]}" -f "$out/one-process"
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run two-ranks "$(dirname "$python")/torchrun" --nnodes 1 --nproc-per-node 2 --rdzv-backend c10d \
    --rdzv-endpoint "127.0.0.1:$port" --master-addr 127.0.0.1 --local-addr 127.0.0.1 \
    -m sb3_trpo_ext.zoo "${common[@]}" -f "$out/two-ranks"
