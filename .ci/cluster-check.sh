#!/usr/bin/env bash
# `strom cluster up --nodes 3` from a shell, checked with kcat (Debian's librdkafka): leaders of
# a replicated topic are spread over the three nodes; after kill -9 of one node its partitions
# get new leaders, acks=all produce keeps working, nothing acknowledged is lost; the killed node
# comes back into the ISR; `strom cluster down` stops everything. Every node serves SQL (psql):
# a persistent query created through one node runs on exactly one node, and moves to a
# survivor when that node is killed.
set -euo pipefail
bin="${1:?usage: cluster-check.sh PATH-TO-strom}"
work=$(mktemp -d)
base=$(python3 - <<'PY'
import socket
# A base port P with P, P+1, P+2 (Kafka, controller, SQL), P+100.. and P+200.. all free.
for p in range(29092, 60000, 7):
    try:
        socks = []
        for q in (p, p + 1, p + 2, p + 100, p + 101, p + 102, p + 200, p + 201, p + 202):
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

# SQL on every node; a query created through node 1 runs on exactly one of them.
sqlp() { PGCONNECT_TIMEOUT=10 psql -h 127.0.0.1 -p "$1" -U strom -d strom -v ON_ERROR_STOP=1 -qAt -F ' ' -c "$2"; }
ready=no
for _ in $(seq 1 100); do
  if sqlp $((base + 2)) "SHOW STREAMS" >/dev/null 2>&1 && sqlp $((base + 102)) "SHOW STREAMS" >/dev/null 2>&1 \
    && sqlp $((base + 202)) "SHOW STREAMS" >/dev/null 2>&1; then ready=yes; break; fi
  sleep 0.2
done
[ "$ready" = yes ] || fail "the SQL ports of the three nodes do not answer"
sqlp $((base + 2)) "CREATE STREAM nums (n BIGINT) WITH (topic='nums', format='json', partitions=3)" || fail "CREATE STREAM"
sqlp $((base + 2)) "CREATE STREAM evens WITH (topic='evens') AS SELECT n FROM nums WHERE n % 2 = 0" || fail "CREATE STREAM AS"
# The states of q1_1 (`SHOW QUERIES`; the first query, made by node 1) on the nodes at these
# SQL ports, one a line.
states() { for port in "$@"; do sqlp "$port" "SHOW QUERIES" | awk '$1 == "q1_1" { for (i = 1; i <= NF; i++) if ($i == "RUNNING" || $i == "ELSEWHERE") print $i }'; done; }
placed=no
for _ in $(seq 1 150); do
  s=$(states $((base + 2)) $((base + 102)) $((base + 202)) || true)
  if [ "$(grep -c RUNNING <<<"$s")" -eq 1 ] && [ "$(grep -c ELSEWHERE <<<"$s")" -eq 2 ]; then placed=yes; break; fi
  sleep 0.2
done
[ "$placed" = yes ] || fail "q1_1 is not running on exactly one node: $(states $((base + 2)) $((base + 102)) $((base + 202)) | paste -sd' ')"
seq 1 100 | sed 's/.*/{"n":&}/' | kcat -b "$bootstrap" -t nums -P || fail "kcat -P nums"

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

# The query runs on one survivor (moved there if node 2 had it: the hosts group's session
# timeout is 10 s), and every even number reaches its output.
seq 101 200 | sed 's/.*/{"n":&}/' | kcat -b "$survivors" -t nums -P || fail "kcat -P nums after the kill"
evens=0
for _ in $(seq 1 300); do
  evens=$(kcat -b "$survivors" -t evens -C -e -q -o beginning 2>/dev/null | sort -u | wc -l || true)
  [ "$evens" -eq 100 ] && [ "$(states $((base + 2)) $((base + 202)) | grep -c RUNNING || true)" -eq 1 ] && break
  sleep 0.2
done
[ "$evens" -eq 100 ] || fail "the query's output has $evens distinct rows after the kill, expected 100; states: $(states $((base + 2)) $((base + 202)) | paste -sd' ')"

# Node 2 comes back (same dir, same ports): it catches up and rejoins every ISR.
quorum="1@127.0.0.1:$((base + 1)),2@127.0.0.1:$((base + 101)),3@127.0.0.1:$((base + 201))"
"$bin" server --node-id 2 --listen "127.0.0.1:$((base + 100))" --data-dir "$work/c/node-2/data" \
  --controller-quorum "$quorum" --default-replication-factor 3 --sql-listen "127.0.0.1:$((base + 102))" \
  >>"$work/c/node-2/server.log" 2>&1 &
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
echo "cluster check passed: leaders spread over 3 nodes, failover after kill -9, 4000/4000 records, node back in every ISR, a SQL query on one node at a time with 100/100 rows across the kill"
