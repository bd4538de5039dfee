#!/usr/bin/env bash
# A self-signed certificate for trying the reference deployment on one machine
# (deploy/compose.yaml): deploy/certs/tether.pem, certificate then private key, the one file
# HAProxy's `crt` takes. Browsers and clients will not trust it unless told to (curl --cacert,
# SSL_CERT_FILE, NODE_EXTRA_CA_CERTS). It is made on your machine and never committed
# (deploy/certs/ is gitignored). For production use a real certificate: deploy/README.md.
set -euo pipefail
dir="${TETHER_CERT_DIR:-$(dirname "$0")/certs}"
host="${TETHER_PUBLIC_HOST:-localhost}"
mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=$host" -addext "subjectAltName=DNS:$host,DNS:localhost,IP:127.0.0.1" \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
(umask 077 && cat "$tmp/cert.pem" "$tmp/key.pem" > "$dir/tether.pem")
echo "wrote $dir/tether.pem (self-signed for $host, 30 days; trust it with --cacert $dir/tether.pem)"
