#!/usr/bin/env bash
# kcat (Debian's librdkafka, a different build from the one the Rust tests bundle) against a
# real `strom server`: list metadata, produce lines with and without keys and with compression,
# consume them back, compare byte for byte, then shut down with SIGTERM and check it exits 0.
set -euo pipefail
bin="${1:?usage: kcat-check.sh PATH-TO-strom}"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
broker="127.0.0.1:$port"
"$bin" server --listen "$broker" --data-dir "$work/data" --num-partitions 3 >"$work/server.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "kcat check FAILED: $*"; echo "--- server log"; cat "$work/server.log"; exit 1; }

for _ in $(seq 1 100); do
  kcat -b "$broker" -L -m 1 >/dev/null 2>&1 && break
  sleep 0.1
done
kcat -b "$broker" -L -m 5 >"$work/meta.txt" 2>&1 || fail "kcat -L"
grep -q "1 brokers:" "$work/meta.txt" || fail "metadata lists no broker: $(cat "$work/meta.txt")"
grep -q "broker 1 at 127.0.0.1:$port" "$work/meta.txt" || fail "advertised address missing"

# Plain lines, one partition, order preserved.
seq 1 2000 | sed 's/^/line /' >"$work/in.txt"
kcat -b "$broker" -t plain -p 0 -P -l "$work/in.txt" || fail "kcat -P"
kcat -b "$broker" -t plain -p 0 -C -e -q -o beginning >"$work/out.txt" || fail "kcat -C"
cmp -s "$work/in.txt" "$work/out.txt" || fail "plain lines differ: $(diff "$work/in.txt" "$work/out.txt" | head)"

# Keyed lines with each codec, across partitions.
for codec in gzip snappy lz4 zstd; do
  seq 1 500 | sed "s/^\(.*\)$/key\1:$codec value \1/" >"$work/keyed-$codec.txt"
  kcat -b "$broker" -t "keyed-$codec" -P -K: -z "$codec" -l "$work/keyed-$codec.txt" || fail "kcat -P -z $codec"
  kcat -b "$broker" -t "keyed-$codec" -C -e -q -o beginning -f '%k:%s\n' \
    | sort >"$work/keyed-out.txt" || fail "kcat -C keyed $codec"
  sort "$work/keyed-$codec.txt" | cmp -s - "$work/keyed-out.txt" \
    || fail "keyed $codec lines differ"
done

kill -TERM "$pid"
wait "$pid" || fail "strom server did not exit cleanly on SIGTERM"
[ -e "$work/data/.clean-shutdown" ] || fail "no clean-shutdown marker after SIGTERM"
echo "kcat check: 1 passed, 0 failed"
