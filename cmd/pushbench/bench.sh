#!/usr/bin/env bash
# Runs the load benchmarks of BENCHMARKS.md: each scenario three times
# against pushgate and against the reference server, the server pinned to
# CPU 0 and pushbench to CPU 1. Results: one JSON object per run, in
# $OUT (default bench-results.jsonl).
#
#   cmd/pushbench/bench.sh [scenario...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench-results.jsonl}
RUNS=${RUNS:-3}
N=${N:-10000}
go build -o .tools/pushgate-bench ./cmd/pushgate
go build -o .tools/pushbench ./cmd/pushbench
PB=.tools/pushbench
CPU_SERVER=${CPU_SERVER:-0}
CPU_LOAD=${CPU_LOAD:-1}

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server KIND: starts pushgate or the reference on free ports, pinned
# to CPU_SERVER; sets PID, WS, GRPC.
start_server() {
  WS=127.0.0.1:$(freeport); GRPC=127.0.0.1:$(freeport)
  if [ "$1" = pushgate ]; then
    taskset -c "$CPU_SERVER" .tools/pushgate-bench --http-addr "$WS" --grpc-addr "$GRPC" \
      --log-level warn --max-new-connections 0 --max-connections 200000 --grpc-rate 0 --drain-window 0 &
  else
    taskset -c "$CPU_SERVER" "$PB" reference --http "$WS" --grpc "$GRPC" 2>/dev/null &
  fi
  PID=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://$WS/" && break
    sleep 0.1
  done
}

stop_server() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }

bench() { # bench NAME SERVER pushbench-args...
  local name=$1 server=$2; shift 2
  for run in $(seq "$RUNS"); do
    start_server "$server"
    echo "== $name $server run $run ($WS $GRPC)" >&2
    taskset -c "$CPU_LOAD" "$PB" --ws "$WS" --grpc "$GRPC" --server-pid "$PID" --json "$@" \
      | jq -c --arg name "$name" --arg server "$server" --argjson run "$run" '. + {name: $name, server: $server, run: $run}' >> "$OUT" \
      || echo "run failed" >&2
    stop_server
  done
}

want() { [ $# -eq 0 ] && return 0; for s in "${SCENARIOS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
SCENARIOS=("$@")
all() { [ ${#SCENARIOS[@]} -eq 0 ] || want "$1"; }

if all idle; then
  for s in pushgate reference; do bench idle-19000 $s --scenario idle --conns 19000 --duration 5s; done
fi
if all fanout-latency; then
  for s in pushgate reference; do bench fanout-latency $s --scenario fanout --conns "$N" --rate 1 --count 15; done
fi
if all fanout-throughput; then
  for s in pushgate reference; do bench fanout-throughput $s --scenario fanout --conns "$N" --rate 50 --count 100 --callers 4; done
  bench fanout-throughput-envelope pushgate --scenario fanout --envelope --conns "$N" --rate 50 --count 100 --callers 4
fi
if all unicast; then
  for s in pushgate reference; do bench unicast-5000 $s --scenario unicast --conns "$N" --rate 5000 --count 25000 --callers 32; done
  bench unicast-max pushgate --scenario unicast --conns "$N" --rate 100000 --count 100000 --callers 64
fi
if all storm; then
  for s in pushgate reference; do bench storm $s --scenario storm --conns "$N"; done
fi
echo "results in $OUT" >&2
