#!/usr/bin/env bash
# The Streams examples as a newcomer runs them: each embedded (it checks its own results
# against a direct computation and exits non-zero when they differ), then word_count against
# a real `strom server`, with kcat reading the application's output topic; finally a smoke run
# of `strom bench streams` (figures come from release runs).
set -euo pipefail
bin="${1:?usage: streams-check.sh PATH-TO-strom}"
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "streams check FAILED: $*"; [ -f "$work/server.log" ] && { echo "--- server log"; tail -50 "$work/server.log"; }; exit 1; }

for ex in word_count page_view_sessions orders_enrichment card_spend_alerts; do
  cargo run --quiet --example "$ex" >"$work/$ex.txt" 2>&1 || { cat "$work/$ex.txt"; fail "example $ex"; }
  echo "example $ex: $(tail -1 "$work/$ex.txt")"
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
broker="127.0.0.1:$port"
"$bin" server --listen "$broker" --data-dir "$work/data" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  kcat -b "$broker" -L -m 1 >/dev/null 2>&1 && break
  sleep 0.1
done
cargo run --quiet --example word_count -- --brokers "$broker" >"$work/wc.txt" 2>&1 || { cat "$work/wc.txt"; fail "word_count --brokers"; }
topic=$(kcat -b "$broker" -L 2>/dev/null | sed -n 's/.*topic "\(word-counts-[0-9]*\)".*/\1/p' | head -1)
[ -n "$topic" ] || fail "no word-counts topic on the server"
# The latest count per word, as kcat sees it (values are 8-byte big-endian integers).
kcat -b "$broker" -t "$topic" -C -e -q -o beginning -f '%k %s\n' -s value=Q >"$work/counts.txt" || fail "kcat -C $topic"
total=$(awk '{ last[$1] = $2 } END { s = 0; for (k in last) s += last[k]; print s }' "$work/counts.txt")
grep -q "word_count: $total words counted" "$work/wc.txt" || fail "kcat sums the latest counts to $total; the example said: $(tail -1 "$work/wc.txt")"
echo "word_count against strom server: $total words, confirmed with kcat"

"$bin" bench streams --records 20000 >"$work/bench.txt" 2>&1 || { cat "$work/bench.txt"; fail "strom bench streams"; }
grep -q "stream-stream join" "$work/bench.txt" || fail "bench output lacks the join row"
