#!/usr/bin/env bash
# Strom SQL as a user meets it: a fresh `strom server`, the example scripts run through psql
# and through `strom sql -f`, records produced with `strom produce` while a windowed query runs
# (its output must keep growing), a stream-table and a stream-stream join, and Parquet files.
set -euo pipefail
bin="${1:?usage: sql-check.sh PATH-TO-strom}"
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; rm -rf "$work" /tmp/strom-top-pages; }
trap cleanup EXIT
fail() { echo "sql check FAILED: $*"; [ -f "$work/server.log" ] && { echo "--- server log"; tail -50 "$work/server.log"; }; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

broker="127.0.0.1:$(free_port)"
sqlport=$(free_port)
rm -rf /tmp/strom-top-pages
"$bin" server --listen "$broker" --sql-listen "127.0.0.1:$sqlport" --data-dir "$work/data" >"$work/server.log" 2>&1 &
pid=$!
export STROM_SQL_SERVER="127.0.0.1:$sqlport" STROM_BROKERS="$broker"
for _ in $(seq 1 150); do
  "$bin" sql -c "SHOW TOPICS;" >/dev/null 2>&1 && break
  sleep 0.2
done
"$bin" sql -c "SHOW TOPICS;" >/dev/null || fail "the SQL port never answered"

# Records in topic $1 (read to the end).
count() { kcat -b "$broker" -t "$1" -C -e -q -o beginning 2>/dev/null | wc -l; }
wait_count() { # topic, at least n, what
  for _ in $(seq 1 100); do [ "$(count "$1")" -ge "$2" ] && return 0; sleep 0.2; done
  fail "$3: $1 has $(count "$1") records, expected at least $2"
}
clicks() { # minute of 2026-01-01 10:MM, users...
  local m=$1; shift
  for u in "$@"; do printf '{"user_id":"%s","page":"/p/%s","ts":"2026-01-01T10:%02d:30Z"}\n' "$u" "$u" "$m"; done
}

# 1. psql runs the clickstream script; the windowed query emits minute by minute while
#    `strom produce` writes clicks.
psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$sqlport" -f sql/examples/clickstream.sql >"$work/psql.txt" 2>&1 \
  || { cat "$work/psql.txt"; fail "psql -f clickstream.sql"; }
grep -q "clicks_per_minute" "$work/psql.txt" || { cat "$work/psql.txt"; fail "SHOW QUERIES lacks the query"; }
clicks 0 ada bob ada | "$bin" produce --brokers "$broker" clicks
clicks 1 ada | "$bin" produce --brokers "$broker" clicks
wait_count clicks_per_minute 2 "minute 0 closed"
first=$(count clicks_per_minute)
clicks 2 bob cy | "$bin" produce --brokers "$broker" clicks
wait_count clicks_per_minute $((first + 1)) "minute 1 closed"
second=$(count clicks_per_minute)
clicks 3 ada | "$bin" produce --brokers "$broker" clicks
wait_count clicks_per_minute $((second + 2)) "minute 2 closed"
kcat -b "$broker" -t clicks_per_minute -C -e -q -o beginning | grep -q '"user_id":"ada","views":2' \
  || fail "ada's first minute should count 2 views"
echo "clickstream: clicks_per_minute grew $first -> $second -> $(count clicks_per_minute) as minutes closed"

# An ad-hoc query over the stored clicks, through psql.
psql -X -A -t -h 127.0.0.1 -p "$sqlport" -c "SELECT count(*) FROM clicks WHERE user_id = 'ada'" >"$work/adhoc.txt" \
  || fail "ad-hoc query"
[ "$(tr -d ' \n' <"$work/adhoc.txt")" = "4" ] || fail "ada has $(cat "$work/adhoc.txt") clicks, expected 4 (two in minute 0, one in minutes 1 and 3)"

# 2. strom sql -f runs the joins.
"$bin" sql -f sql/examples/orders_payments.sql >"$work/joins.txt" 2>&1 || { cat "$work/joins.txt"; fail "strom sql -f orders_payments.sql"; }
echo '{"id":1,"name":"Ada","country":"UK"}' | "$bin" produce --brokers "$broker" customers
sleep 1
{
  echo '{"order_id":7,"customer_id":1,"amount":25.5,"ts":"2026-01-01T10:00:00Z"}'
  echo '{"order_id":8,"customer_id":1,"amount":5,"ts":"2026-01-01T10:01:00Z"}'
} | "$bin" produce --brokers "$broker" orders
{
  echo '{"order_id":7,"paid":25.5,"ts":"2026-01-01T10:03:00Z"}'
  echo '{"order_id":8,"paid":5,"ts":"2026-01-01T10:30:00Z"}'
} | "$bin" produce --brokers "$broker" payments
wait_count orders_enriched 2 "stream-table join"
kcat -b "$broker" -t orders_enriched -C -e -q -o beginning | grep -q '"name":"Ada"' || fail "orders not enriched"
wait_count paid_orders 1 "interval join"
sleep 1
[ "$(count paid_orders)" = "1" ] || fail "only order 7 was paid within 10 minutes; paid_orders has $(count paid_orders)"
echo "joins: orders_enriched $(count orders_enriched), paid_orders $(count paid_orders)"

# 3. Parquet files, rolled by age.
"$bin" sql -f sql/examples/top_pages_parquet.sql >"$work/parquet.txt" 2>&1 || { cat "$work/parquet.txt"; fail "top_pages_parquet.sql"; }
{ clicks 4 ada; printf '{"user_id":"x","page":"/late","ts":"2026-01-01T12:00:00Z"}\n'; } | "$bin" produce --brokers "$broker" clicks
for _ in $(seq 1 100); do
  ls /tmp/strom-top-pages/date=*/hour=*/*.parquet >/dev/null 2>&1 && break
  sleep 0.2
done
ls /tmp/strom-top-pages/date=*/hour=*/*.parquet >/dev/null 2>&1 || fail "no Parquet file under /tmp/strom-top-pages"
echo "parquet: $(ls /tmp/strom-top-pages/date=*/hour=*/*.parquet | wc -l) file(s)"

# 4. Errors are one line and keep the session.
out=$("$bin" sql -c "SELECT amout FROM clicks;" 2>&1) && fail "a bad column succeeded"
[ "$(printf '%s\n' "$out" | wc -l)" = "1" ] || fail "error not one line: $out"
printf '%s\n' "$out" | grep -q "did you mean \`amount\`\|unknown column" || fail "unexpected error: $out"
echo "errors: $out"

"$bin" sql -c "SHOW QUERIES;" | grep -c RUNNING | grep -q '^4$' || { "$bin" sql -c "SHOW QUERIES;"; fail "expected 4 running queries"; }
echo "sql check passed"
