#!/usr/bin/env bash
# The `strom` command line from a shell against a real `strom server`: lines round-trip through
# `strom produce` and `strom consume`, and interoperate with kcat (Debian's librdkafka) both ways.
set -euo pipefail
bin="${1:?usage: cli-check.sh PATH-TO-strom}"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export STROM_BROKERS="127.0.0.1:$port"
"$bin" server --listen "$STROM_BROKERS" --data-dir "$work/data" >"$work/server.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "cli check FAILED: $*"; echo "--- server log"; cat "$work/server.log"; exit 1; }
for _ in $(seq 1 100); do "$bin" cluster info >/dev/null 2>&1 && break; sleep 0.1; done

"$bin" topic create lines --partitions 1 || fail "topic create"
seq 1 3000 | sed 's/^/line /' >"$work/in.txt"
"$bin" produce lines <"$work/in.txt" || fail "strom produce"
"$bin" consume lines --from beginning --count 3000 >"$work/out.txt" || fail "strom consume"
cmp -s "$work/in.txt" "$work/out.txt" || fail "strom round trip differs: $(diff "$work/in.txt" "$work/out.txt" | head)"

# strom produce -> kcat consume, keyed with a header, zstd.
seq 1 500 | sed 's/^\(.*\)$/k\1:v\1/' >"$work/keyed.txt"
"$bin" topic create keyed --partitions 3
"$bin" produce keyed --key-separator : --header origin=cli --compression zstd <"$work/keyed.txt" || fail "strom produce keyed"
kcat -b "$STROM_BROKERS" -t keyed -C -e -q -o beginning -f '%k:%s %h\n' | sort >"$work/kcat-out.txt" || fail "kcat -C"
sed 's/$/ origin=cli/' "$work/keyed.txt" | sort | cmp -s - "$work/kcat-out.txt" || fail "kcat read something else: $(head -3 "$work/kcat-out.txt")"

# kcat produce -> strom consume --format json.
seq 1 200 | sed 's/^\(.*\)$/key\1;value \1/' | kcat -b "$STROM_BROKERS" -t from-kcat -P -K';' -z lz4 || fail "kcat -P"
"$bin" consume from-kcat --from beginning --count 200 --format json >"$work/json.txt" || fail "strom consume json"
python3 - "$work/json.txt" <<'PY' || fail "json output"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 200, len(rows)
assert sorted(int(r["key"][3:]) for r in rows) == list(range(1, 201))
assert all(r["value"] == "value " + r["key"][3:] for r in rows)
assert all({"partition", "offset", "timestamp", "headers"} <= r.keys() for r in rows)
PY
"$bin" consume no-such-topic --count 1 2>"$work/err.txt" && fail "consuming an unknown topic succeeded"
[ "$(wc -l <"$work/err.txt")" = 1 ] && grep -q "unknown topic" "$work/err.txt" || fail "error is not one line: $(cat "$work/err.txt")"
echo "cli check: 1 passed, 0 failed"
