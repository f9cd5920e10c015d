#!/usr/bin/env bash
# Runs the load benchmarks of BENCHMARKS.md: each scenario three times
# against pushgate and against the floor (`pushbench reference`: the
# minimal server, one write(2) per connection of a frame encoded once), the
# server pinned to CPU 0 and pushbench to CPU 1. Results: one JSON object
# per run, in $OUT (default bench-results.jsonl); at the end, the medians
# (and min–max) of each benchmark and server.
#
#   cmd/pushbench/bench.sh [scenario...]   (default: all)
#
# Scenarios: idle, fanout-latency, fanout-cpu, fanout-max, fanout-envelope,
# unicast, storm, cluster (pushgate only: cluster.sh, 4 nodes sharing a
# redis-server). SERVERS (default "pushgate floor") picks the servers;
# "library" is the reference server writing through coder/websocket,
# "before" the pushgate binary at $BEFORE (an earlier build, for
# before/after comparisons in the same run), and "centrifugo" the Centrifugo
# v6 binary at $CENTRIFUGO with cmd/pushbench/centrifugo.yaml (its JSON
# protocol, every connection subscribed to one channel, each broadcast a
# publish through its HTTP API; idle and the fanout scenarios only).
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
SERVERS=${SERVERS:-pushgate floor}
case " $SERVERS " in *" centrifugo "*)
  [ -x "${CENTRIFUGO:-}" ] || { echo "SERVERS has centrifugo: set CENTRIFUGO to its binary" >&2; exit 1; } ;;
esac

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server KIND: starts pushgate, the floor, the library reference or
# Centrifugo on free ports, pinned to CPU_SERVER (each takes GOMAXPROCS from
# the affinity mask: 1; Centrifugo's automaxprocs leaves it so); sets PID,
# WS, GRPC.
start_server() {
  WS=127.0.0.1:$(freeport); GRPC=127.0.0.1:$(freeport)
  if [ "$1" = pushgate ] || [ "$1" = before ]; then
    local bin=.tools/pushgate-bench
    [ "$1" = before ] && bin=$BEFORE
    taskset -c "$CPU_SERVER" "$bin" --http-addr "$WS" --grpc-addr "$GRPC" \
      --log-level warn --max-new-connections 0 --max-connections 200000 --grpc-rate 0 --drain-window 0 &
  elif [ "$1" = centrifugo ]; then
    taskset -c "$CPU_SERVER" "$CENTRIFUGO" -c cmd/pushbench/centrifugo.yaml -a 127.0.0.1 -p "${WS#*:}" &
  else
    taskset -c "$CPU_SERVER" "$PB" reference --writer "$1" --http "$WS" --grpc "$GRPC" 2>/dev/null &
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
  case " $SERVERS " in *" $server "*) ;; *) return 0 ;; esac
  [ "$server" = centrifugo ] && set -- --target centrifugo --api-key pushbench "$@"
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

S=(pushgate floor library before)
# Centrifugo in the scenarios it can run (see --target).
C=("${S[@]}" centrifugo)
if all idle; then
  for s in "${C[@]}"; do bench idle-19000 $s --scenario idle --conns 19000 --duration 5s; done
fi
if all fanout-latency; then
  for s in "${C[@]}"; do bench fanout-latency $s --scenario fanout --conns "$N" --rate 1 --count 15; done
fi
if all fanout-cpu; then
  # 6 broadcasts/s to N=10,000: 60,000 deliveries/s; CPU per delivered frame.
  for s in "${C[@]}"; do bench fanout-60k $s --scenario fanout --conns "$N" --rate 6 --count 60 --callers 4; done
fi
if all fanout-max; then
  # Sustained: p99 call to frame under 1 s, nothing lost.
  for r in ${MAX_RATES:-10 15 20}; do
    for s in "${C[@]}"; do bench "fanout-$((r * N / 1000))k" $s --scenario fanout --conns "$N" --rate "$r" --count $((r * 10)) --callers 4; done
  done
fi
if all fanout-envelope; then
  bench fanout-60k-envelope pushgate --scenario fanout --envelope --conns "$N" --rate 6 --count 60 --callers 4
fi
if all unicast; then
  for s in "${S[@]}"; do bench unicast-5000 $s --scenario unicast --conns "$N" --rate 5000 --count 25000 --callers 32; done
  for s in "${S[@]}"; do bench unicast-max $s --scenario unicast --conns "$N" --rate 100000 --count 100000 --callers 64; done
fi
if all storm; then
  for s in "${S[@]}"; do bench storm $s --scenario storm --conns "$N"; done
fi
if all cluster; then
  # pushgate only: 4 nodes and Redis, 76,000 connections (cluster.sh).
  OUT="$OUT" RUNS="$RUNS" cmd/pushbench/cluster.sh
fi
echo "results in $OUT" >&2
# Medians (min-max) per benchmark and server.
jq -rs '
  def med: sort | .[(length - 1) / 2 | floor];
  def cell(f): (map(f) | "\(med) (\(min)-\(max))");
  group_by([.name, .server])[] |
  "\(.[0].name)\t\(.[0].server)\truns \(length)\tdeliveries/s \(cell(.deliveries_per_sec | floor))\tlost \(cell(.lost))" +
  "\tp50 ms \(cell(.latency_us.p50 / 1000))\tp99 ms \(cell(.latency_us.p99 / 1000))" +
  "\tlast-frame p99 ms \(cell((.last_frame_latency_us.p99 // 0) / 1000))" +
  "\tCPU s/s \(cell(.server_cpu_seconds_per_second // 0))\tCPU us/delivery \(cell(.server_cpu_us_per_delivery // 0))" +
  "\tKiB/conn \(cell((.server_rss_per_conn_bytes // 0) / 1024 | floor))"
' "$OUT" >&2
