#!/usr/bin/env bash
# kafkajs (pure JavaScript, its own version negotiation) against a real `strom server`.
set -euo pipefail
bin="${1:?usage: kafkajs-check.sh PATH-TO-strom}"
here=$(cd "$(dirname "$0")" && pwd)
mods="${HOME}/.cache/strom-kafkajs"
if [ ! -d "$mods/node_modules/kafkajs" ]; then
  mkdir -p "$mods"
  (cd "$mods" && npm install --silent --no-audit --no-fund kafkajs@2.2.4 >/dev/null)
fi
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" server --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.1
done
if ! NODE_PATH="$mods/node_modules" timeout 180 node "$here/kafkajs_check.js" "127.0.0.1:$port"; then
  echo "--- server log"; cat "$work/server.log"; exit 1
fi
