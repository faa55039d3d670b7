#!/usr/bin/env bash
# `strom cluster up --nodes 3` from a shell, checked with kcat (Debian's librdkafka): leaders of
# a replicated topic are spread over the three nodes; after kill -9 of one node its partitions
# get new leaders, acks=all produce keeps working, nothing acknowledged is lost; the killed node
# comes back into the ISR; `strom cluster down` stops everything.
set -euo pipefail
bin="${1:?usage: cluster-check.sh PATH-TO-strom}"
work=$(mktemp -d)
base=$(python3 - <<'PY'
import socket
# A base port P with P, P+1, P+100, P+101, P+200, P+201 all free.
for p in range(29092, 60000, 7):
    try:
        socks = []
        for q in (p, p + 1, p + 100, p + 101, p + 200, p + 201):
            s = socket.socket(); s.bind(("127.0.0.1", q)); socks.append(s)
        print(p); break
    except OSError:
        pass
PY
)
pid2b=
cleanup() {
  [ -n "$pid2b" ] && kill -9 "$pid2b" 2>/dev/null || true
  "$bin" cluster down --dir "$work/c" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "cluster check FAILED: $*"
  for f in "$work"/c/node-*/server.log; do echo "--- $f"; grep -v '^\s*$' "$f" | tail -15; done
  exit 1
}

out=$("$bin" cluster up --nodes 3 --dir "$work/c" --base-port "$base" 2>/dev/null) || fail "cluster up"
bootstrap=$(grep '^bootstrap.servers=' <<<"$out" | cut -d= -f2)
[ -n "$bootstrap" ] || fail "no bootstrap.servers line in: $out"
export STROM_BROKERS="$bootstrap"
first="${bootstrap%%,*}"

"$bin" topic create spread --partitions 6 --replication-factor 3 --config min.insync.replicas=2 || fail "topic create"
leaders() { kcat -b "$first" -L -t spread | awk '/partition [0-9]+, leader/ { gsub(",", "", $4); print $4 }'; }
distinct=$(leaders | sort -u | wc -l)
[ "$distinct" -eq 3 ] || fail "leaders not spread over 3 nodes: $(leaders | tr '\n' ' ')"

seq 1 2000 | kcat -b "$bootstrap" -t spread -P -X acks=all -X enable.idempotence=true || fail "kcat -P before the kill"

# kill -9 node 2; its leaderships move (broker session timeout: 9 s by default).
pid2=$(python3 -c 'import json,sys; print([n["pid"] for n in json.load(open(sys.argv[1]))["nodes"] if n["id"] == 2][0])' "$work/c/cluster.json")
kill -9 "$pid2"
moved=no
for _ in $(seq 1 150); do
  if ! leaders | grep -qx 2 && [ "$(leaders | grep -c -- '-1' || true)" -eq 0 ]; then moved=yes; break; fi
  sleep 0.1
done
[ "$moved" = yes ] || fail "node 2 still leads or partitions are leaderless: $(leaders | tr '\n' ' ')"
kcat -b "$first" -L -t spread

survivors=$(tr ',' '\n' <<<"$bootstrap" | grep -v ":$((base + 100))\$" | paste -sd,)
seq 2001 4000 | kcat -b "$survivors" -t spread -P -X acks=all -X enable.idempotence=true || fail "kcat -P after the kill"
count=$(kcat -b "$survivors" -t spread -C -e -q -o beginning | sort -n | uniq | wc -l)
[ "$count" -eq 4000 ] || fail "read $count distinct records back, expected 4000"

# Node 2 comes back (same dir, same ports): it catches up and rejoins every ISR.
quorum="1@127.0.0.1:$((base + 1)),2@127.0.0.1:$((base + 101)),3@127.0.0.1:$((base + 201))"
"$bin" server --node-id 2 --listen "127.0.0.1:$((base + 100))" --data-dir "$work/c/node-2/data" \
  --controller-quorum "$quorum" --default-replication-factor 3 >>"$work/c/node-2/server.log" 2>&1 &
pid2b=$!
back=no
for _ in $(seq 1 200); do
  n=$(kcat -b "$first" -L -t spread | grep -c 'isrs: .*2' || true)
  if [ "$n" -eq 6 ]; then back=yes; break; fi
  sleep 0.1
done
[ "$back" = yes ] || fail "node 2 did not rejoin the ISR: $(kcat -b "$first" -L -t spread)"

kill -TERM "$pid2b"; wait "$pid2b" || fail "node 2 did not stop cleanly"; pid2b=
"$bin" cluster down --dir "$work/c" || fail "cluster down"
echo "cluster check passed: leaders spread over 3 nodes, failover after kill -9, 4000/4000 records, node back in every ISR"
