#!/usr/bin/env bash
# Sets up the database, a demo user, Redis, and runs one daphne node at 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
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
"$PY" manage.py create_demo_user --password "${DEMO_PASSWORD:-demo-password}"
# The demo page connects to the URL that node discovery announces: follow PORT.
export REALTIME_PUBLIC_WS_URL="${REALTIME_PUBLIC_WS_URL:-ws://127.0.0.1:${PORT:-8000}/ws/v1/}"
echo
echo "Tether is starting at http://127.0.0.1:${PORT:-8000}/  (WebSocket: ws://127.0.0.1:${PORT:-8000}/ws/v1/)"
echo "Open that page and sign in as the demo user: demo / ${DEMO_PASSWORD:-demo-password}"
echo "Admin: create one with '$PY manage.py createsuperuser'"
echo "Get a token: curl -s -X POST -H 'Content-Type: application/json' -d '{\"username\":\"demo\",\"password\":\"${DEMO_PASSWORD:-demo-password}\"}' http://127.0.0.1:${PORT:-8000}/api/auth/token/"
echo "Then speak docs/protocol.md on the socket; the demo agent remembers 'my name is ...' and answers 'count N'."
exec "$PY" -m realtime.serve
