#!/usr/bin/env bash
# The cluster benchmark of BENCHMARKS.md: 4 pushgate nodes sharing one
# redis-server, 76,000 connections spread over them (8 pushbench child
# processes, two per node), SendToUser through node 1 to random users at
# 2,000 calls/s, so three calls in four cross nodes. RUNS runs (default 3);
# one JSON object per run in $OUT (default bench-cluster.jsonl). Extra
# arguments go to every node (e.g. --heartbeat-interval 10m). PUSHGATE
# names another pushgate binary to run (an earlier build, for before/after
# comparisons); by default the one built from this tree.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench-cluster.jsonl}
RUNS=${RUNS:-3}
CONNS=${CONNS:-76000}
go build -o .tools/pushgate-bench ./cmd/pushgate
go build -o .tools/pushbench ./cmd/pushbench
PUSHGATE=${PUSHGATE:-.tools/pushgate-bench}

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for run in $(seq "$RUNS"); do
  RPORT=$(freeport)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  pids=($!)
  sleep 0.5
  ws=(); grpc=()
  for i in 1 2 3 4; do
    ws+=("127.0.0.1:$(freeport)"); grpc+=("127.0.0.1:$(freeport)")
    "$PUSHGATE" --engine redis --redis-url "redis://127.0.0.1:$RPORT/0" \
      --http-addr "${ws[-1]}" --grpc-addr "${grpc[-1]}" --log-level warn \
      --max-connections 20000 --max-new-connections 0 --grpc-rate 0 --drain-window 0 "$@" &
    pids+=($!)
  done
  for w in "${ws[@]}"; do
    for _ in $(seq 100); do curl -s -o /dev/null "http://$w/" && break; sleep 0.1; done
  done
  .tools/pushbench --scenario unicast --ws "$(IFS=,; echo "${ws[*]}")" --grpc "${grpc[0]}" \
    --conns "$CONNS" --procs 8 --rate 2000 --count 40000 --callers 32 --settle 10s --json |
    python3 -c 'import json,sys; d=json.load(sys.stdin); d["name"]="cluster-unicast-2000"; print(json.dumps(d))' >>"$OUT"
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "run $run done" >&2
done
