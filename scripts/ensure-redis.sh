#!/usr/bin/env bash
# Makes sure a Redis answers at REDIS_URL; starts a local redis-server if one is installed
# and nothing is listening. Persistence off: Redis is a bus and a cache here, not a store.
set -euo pipefail
url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
hostport="${url#redis://}"; hostport="${hostport%%/*}"; hostport="${hostport##*@}"
host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$host" ] && port=6379
ping() { (exec 3<>"/dev/tcp/$host/$port" && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if ping; then exit 0; fi
if command -v redis-server >/dev/null 2>&1 && { [ "$host" = "127.0.0.1" ] || [ "$host" = "localhost" ]; }; then
  echo "starting redis-server on $host:$port"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no >/dev/null
  for _ in $(seq 50); do ping && exit 0; sleep 0.1; done
fi
echo "Redis is not reachable at $url; install redis-server or set REDIS_URL" >&2
exit 1
