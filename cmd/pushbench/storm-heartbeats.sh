#!/usr/bin/env bash
# Heartbeats during a storm (BENCHMARKS.md): pushgate on CPU 0 with
# aggressive heartbeats (a ping every 2 s, 1 s to answer) holds 5,000 idle
# connections; then 10,000 more clients connect, drop and reconnect at once
# (the storm scenario), load on CPU 1. It prints the storm's time to all
# back and the heartbeat timeouts the server counted meanwhile (want 0).
# PUSHGATE names another pushgate binary to run (an earlier build, for
# before/after comparisons); by default the one built from this tree.
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o .tools/pushgate-bench ./cmd/pushgate
go build -o .tools/pushbench ./cmd/pushbench
PUSHGATE=${PUSHGATE:-.tools/pushgate-bench}
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WS=127.0.0.1:$(freeport); GRPC=127.0.0.1:$(freeport)
taskset -c 0 "$PUSHGATE" --http-addr "$WS" --grpc-addr "$GRPC" --log-level warn --max-new-connections 0 \
  --max-connections 200000 --grpc-rate 0 --heartbeat-interval 2s --heartbeat-timeout 1s &
SP=$!
trap 'kill $SP 2>/dev/null' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://$WS/" && break; sleep 0.1; done
taskset -c 1 .tools/pushbench --scenario idle --ws "$WS" --grpc "$GRPC" --conns 5000 --duration 40s --json >/dev/null &
IP=$!
sleep 12
metric() { curl -s "http://$WS/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
before=$(metric pushgate_heartbeat_timeouts_total)
back=$(taskset -c 1 .tools/pushbench --scenario storm --ws "$WS" --grpc "$GRPC" --conns 10000 --json |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["storm_back_ms"], "ms,", d["connected"], "back,", d["connect_failed"], "failed")')
after=$(metric pushgate_heartbeat_timeouts_total)
wait $IP
echo "storm: $back; heartbeat timeouts during it: $((${after%.*} - ${before%.*}))"
