#!/usr/bin/env bash
# Sets up the database, a demo user, Redis, and runs one daphne node at 127.0.0.1:8000 (or the
# next free port when 8000 is taken and PORT was not given). Stop it with Ctrl+C.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
BIND="${BIND:-127.0.0.1}"

# A port is free when it can be bound. PORT given by the user: used as is, or a clear refusal.
# Not given: 8000, else the next free one up to 8019, said loudly (nobody reads a CRITICAL
# "Address already in use" from daphne as "choose another port").
port_free() { "$PY" -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2])))' "$BIND" "$1" 2>/dev/null; }
if [ -n "${PORT:-}" ]; then
  if ! port_free "$PORT"; then
    echo "Port $PORT on $BIND is already in use (another 'make demo'? see 'Stop it' in README.md)." >&2
    echo "Pick another one: PORT=$((PORT + 1)) make demo" >&2
    exit 1
  fi
else
  PORT=8000
  while ! port_free "$PORT"; do
    if [ "$PORT" -ge 8019 ]; then
      echo "Ports 8000-8019 on $BIND are all in use; choose one: PORT=9000 make demo" >&2
      exit 1
    fi
    PORT=$((PORT + 1))
  done
  if [ "$PORT" != 8000 ]; then
    echo "Port 8000 is in use (another 'make demo'? see 'Stop it' in README.md); using port $PORT instead."
  fi
fi
export PORT BIND

# Servers refuse to start without SECRET_KEY (project/keys.py). The demo generates one on its
# first run and keeps it in .tether-demo-secret-key (gitignored, readable by you only), so
# tokens survive a restart of the demo. Never use it anywhere else.
KEY_FILE="${TETHER_DEMO_KEY_FILE:-.tether-demo-secret-key}"
if [ -z "${SECRET_KEY:-}" ]; then
  if [ ! -s "$KEY_FILE" ]; then
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(50))' > "$KEY_FILE")
  fi
  SECRET_KEY="$(cat "$KEY_FILE")"
  export SECRET_KEY
fi
bash scripts/ensure-redis.sh
"$PY" manage.py migrate --noinput
"$PY" manage.py collectstatic --noinput -v 0
"$PY" manage.py create_demo_user --password "${DEMO_PASSWORD:-demo-password}" --port "$PORT"
# The demo page connects to the URL that node discovery announces: follow PORT.
export REALTIME_PUBLIC_WS_URL="${REALTIME_PUBLIC_WS_URL:-ws://127.0.0.1:${PORT}/ws/v1/}"
echo
echo "Tether is starting at http://127.0.0.1:${PORT}/  (WebSocket: ws://127.0.0.1:${PORT}/ws/v1/)"
echo "Open that page and sign in as the demo user: demo / ${DEMO_PASSWORD:-demo-password}"
echo "Admin: create one with '$PY manage.py createsuperuser'"
echo "Get a token: curl -s -X POST -H 'Content-Type: application/json' -d '{\"username\":\"demo\",\"password\":\"${DEMO_PASSWORD:-demo-password}\"}' http://127.0.0.1:${PORT}/api/auth/token/"
echo "Then speak docs/protocol.md on the socket; the demo agent remembers 'my name is ...' and answers 'count N'."
echo "Stop it with Ctrl+C (Redis, if this script started it: redis-cli shutdown)."
exec "$PY" -m realtime.serve
