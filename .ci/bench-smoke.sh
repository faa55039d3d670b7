#!/usr/bin/env bash
# `strom bench produce|consume|e2e` against a real `strom server`: each prints a summary, and
# --json output parses; `strom bench replication` on the 3-node cluster it starts itself. Debug
# build, small numbers: this checks the commands, not the figures.
set -euo pipefail
bin="${1:?usage: bench-smoke.sh PATH-TO-strom}"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export STROM_BROKERS="127.0.0.1:$port"
"$bin" server --listen "$STROM_BROKERS" --data-dir "$work/data" >"$work/server.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 100); do "$bin" cluster info >/dev/null 2>&1 && break; sleep 0.1; done
for mode in produce consume e2e; do
  "$bin" bench "$mode" --records 20000 --record-size 512 --no-progress | tee "$work/$mode.txt"
  grep -q "rec/s" "$work/$mode.txt" || { echo "bench $mode printed no summary"; exit 1; }
done
"$bin" bench produce --records 5000 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["records"]==5000, d'
"$bin" bench replication --records 20000 --record-size 512 --no-progress --dir "$work" | tee "$work/replication.txt"
grep -q '^(b)/(a) ' "$work/replication.txt" || { echo "bench replication printed no ratio"; exit 1; }
