"""Tether settings. Every knob comes from the environment; see README.md for the list."""

import logging
import math
import os
import secrets
import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.env import env_bool, env_float, env_int, env_list, env_str
from realtime.infra.logcontext import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)
# Production: both keys explicit and distinct, the HTTP hardening below on by default.
PRODUCTION = env_bool("TETHER_PRODUCTION", False)
# No key is published with the code (issue 24: a dev key in the repository let anyone who read it
# mint an access token of any user). Without SECRET_KEY this process makes a random one: a
# management command (migrate, createsuperuser, the tests) needs no stable key, and every
# server refuses to start on it unless DJANGO_DEBUG=1 (project/keys.py). `make demo` stores a
# generated key locally (scripts/demo.sh).
SECRET_KEY_IS_EXPLICIT = bool(env_str("SECRET_KEY", ""))
if not SECRET_KEY_IS_EXPLICIT and PRODUCTION:
    raise ImproperlyConfigured("SECRET_KEY must be set when TETHER_PRODUCTION=1")
SECRET_KEY = env_str("SECRET_KEY", "") or secrets.token_urlsafe(50)
# The key access and refresh tokens are signed with: its own in production, so that rotating one
# does not rotate the other and a leak of one (a session cookie forged) is not a token minted.
JWT_SIGNING_KEY = env_str("JWT_SIGNING_KEY", "")
if PRODUCTION and (not JWT_SIGNING_KEY or JWT_SIGNING_KEY == SECRET_KEY):
    raise ImproperlyConfigured("JWT_SIGNING_KEY must be set, and differ from SECRET_KEY, when TETHER_PRODUCTION=1")
JWT_SIGNING_KEY = JWT_SIGNING_KEY or SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "channels",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "sessions_app",
    "realtime",
    "demo",
]

MIDDLEWARE = [
    # First: it answers CORS preflights, and every response under /api/ gets its headers.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every page: the demo, the admin, Swagger UI (project/csp.py).
    "project.csp.ContentSecurityPolicyMiddleware",
    # Serves the admin's static files from daphne without a separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# --- HTTP hardening (docs/security.md). TLS ends at the balancer (deploy/haproxy.cfg), which
# sets X-Forwarded-Proto; nodes must be reachable only through it. On by default in production.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("TLS_PROXY_HEADER", PRODUCTION) else None
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
# The balancer's and Prometheus' plain-HTTP calls to a node itself are not redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
# Origins (scheme://host[:port]) allowed to POST forms to the admin besides the host itself.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
X_FRAME_OPTIONS = "DENY"
# `manage.py check --deploy` runs in CI with production settings (.ci/run); these two warnings
# are the operator's choice, not the project's:
SILENCED_SYSTEM_CHECKS = [
    # HSTS for every subdomain: only the owner of the domain knows that each of them is HTTPS
    # (SECURE_HSTS_INCLUDE_SUBDOMAINS=1 turns it on).
    "security.W005",
    # The HSTS preload list is a commitment to browsers that is slow to undo; the operator opts
    # in (SECURE_HSTS_PRELOAD=1) after submitting the domain.
    "security.W021",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))}
# A node's database call still running after this many seconds has its connection closed and
# fails as "unavailable" (realtime/infra/db.py): a PostgreSQL that stops answering without
# closing the connection (a partition) would hold it forever. New connections give up after as
# long (libpq's connect_timeout, whole seconds, at least 2).
REALTIME_DB_TIMEOUT = env_float("REALTIME_DB_TIMEOUT", 5.0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", max(2, math.ceil(REALTIME_DB_TIMEOUT)))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several server threads write the event log at once; wait for the lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    DATABASES["default"].setdefault("TEST", {})["NAME"] = str(
        BASE_DIR / f"{env_str('TEST_DB_NAME', 'test-db')}.sqlite3"
    )
elif os.environ.get("TEST_DB_NAME"):
    # Lets several test runs share one PostgreSQL server without clashing.
    DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ["TEST_DB_NAME"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Checked wherever a password is chosen (the admin, createsuperuser, changepassword, the
# password forms): long enough, not one of the 20,000 most common, not close to the username,
# names or email (ASVS V2.1).
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The admin's assets are served from the installed apps when collectstatic has not run.
WHITENOISE_USE_FINDERS = True
# The JavaScript client, served as it is in the repository: /static/tether/tether-client.js.
STATICFILES_DIRS = [("tether", BASE_DIR / "clients" / "js" / "src")]

# Plain text by default; LOG_FORMAT=json gives one JSON object per line with node,
# conversation_id, connection_id, run_id, seq and close_code where they apply.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
LOGGING = logging_config(
    LOG_FORMAT,
    env_str("LOG_LEVEL", "INFO"),
    # LOG_LEVELS=realtime.phases=DEBUG,tether.auth=WARNING: levels of single loggers.
    {name.strip(): level.strip().upper() for name, _, level in (i.partition("=") for i in env_list("LOG_LEVELS", []))},
)
if LOG_FORMAT == "json":
    logging.captureWarnings(True)  # Python warnings become JSON lines too

# --- Redis and the channel layer -------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# A prefix isolates several deployments (or test runs) sharing one Redis.
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "tether")
# The pool raises (it does not wait) at its cap; a connect storm must not turn into 500s.
REALTIME_REDIS_MAX_CONNECTIONS = env_int("REALTIME_REDIS_MAX_CONNECTIONS", 2000)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    # redis-py 8 defaults to a 5 s socket timeout, which kills the layer's
                    # blocking receive on an idle consumer (1011 after ~5 s).
                    "socket_timeout": None,
                    "socket_connect_timeout": 5,
                    "max_connections": REALTIME_REDIS_MAX_CONNECTIONS,
                    "health_check_interval": 30,
                }
            ],
            "prefix": f"{REDIS_KEY_PREFIX}:layer:",
            "capacity": env_int("REALTIME_LAYER_CAPACITY", 1000),
            "expiry": 60,
            "group_expiry": 86400,
        },
    }
}

# Connections of redis-py's pool per process (the node registry, liveness, the reaper's batch
# releases); callers wait for a free one rather than opening more. Publishing, the rate limits
# and slots do not use it: they share one pipelined connection (realtime/infra/resp.py).
REALTIME_REDIS_POOL_SIZE = env_int("REALTIME_REDIS_POOL_SIZE", 32)
# The project's own Redis calls (publishing, rate limits, slots, node registry) fail after this
# many seconds without a reply; a pipelined connection whose oldest command waits that long is
# dropped (a silent Redis) and the next command connects again.
REALTIME_REDIS_TIMEOUT = env_float("REALTIME_REDIS_TIMEOUT", 2.0)
# A node's fan-out subscription pings Redis after this many seconds without a message, and
# rebuilds itself when no reply follows within REALTIME_REDIS_TIMEOUT: a partitioned Redis
# closes nothing, and the subscription has no socket timeout (issue 25).
REALTIME_FANOUT_PING_INTERVAL = env_float("REALTIME_FANOUT_PING_INTERVAL", 10.0)
# A node that has not refreshed its registry entry for this long is dead: its connections
# are closed and its runs released by the surviving nodes.
REALTIME_NODE_TTL = env_float("REALTIME_NODE_TTL", 15.0)
REALTIME_NODE_REAP_INTERVAL = env_float("REALTIME_NODE_REAP_INTERVAL", 5.0)
# On SIGTERM, agent runs get this long to finish before they are handed to another node.
REALTIME_DRAIN_GRACE = env_float("REALTIME_DRAIN_GRACE", 20.0)
# Sockets are moved away in waves of this many, this far apart, so the taking-over nodes are
# not handed every resume at once. Small and frequent (125 sockets/s either way): we found
# 25 every 0.2 s put every client of a small node into one burst, and a rolling restart of 2
# nodes with 20 streaming clients resumed at p99 371-492 ms; 5 every 0.04 s, 125-224 ms
# (bench/rolling_restart_bench.py, docs/benchmarks.md, issue 12).
REALTIME_DRAIN_BATCH = env_int("REALTIME_DRAIN_BATCH", 5)
REALTIME_DRAIN_BATCH_INTERVAL = env_float("REALTIME_DRAIN_BATCH_INTERVAL", 0.04)
# Threads for database calls in a server node (each holds one database connection); the delta
# group commit has one more of its own (realtime.infra.db.commit_executor). Was 16, so that slow
# calls could not hold up the group commit; with its own thread that reason went, and 16 threads
# handing the GIL back and forth with the loop cost more CPU than their queries (issue 22:
# 154 µs per delivered event at 500 streams against 112-115 with 2 or 4 threads).
REALTIME_DB_THREADS = env_int("REALTIME_DB_THREADS", 4)

# Rate limits: (events, per seconds). Shared by all nodes through Redis unless noted.
def _limit(name: str, default: str) -> tuple[int, float]:
    count, _, seconds = env_str(name, default).partition("/")
    return int(count), float(seconds)


REALTIME_RATE_CONNECT_USER = _limit("REALTIME_RATE_CONNECT_USER", "30/60")
REALTIME_RATE_CONNECT_IP = _limit("REALTIME_RATE_CONNECT_IP", "120/60")
REALTIME_RATE_MESSAGES = _limit("REALTIME_RATE_MESSAGES", "30/60")  # per conversation
# Agent runs started per user, over all conversations (each message starts one; runs cost money).
REALTIME_RATE_RUNS_USER = _limit("REALTIME_RATE_RUNS_USER", "60/60")
# Conversations created per user by `connect` with conversation_id null (REST has its own,
# API_THROTTLE_CONVERSATIONS): each is a row, and a socket skipped the REST throttle.
REALTIME_RATE_NEW_CONVERSATIONS_USER = _limit("REALTIME_RATE_NEW_CONVERSATIONS_USER", "30/60")
REALTIME_RATE_FRAMES = _limit("REALTIME_RATE_FRAMES", "60/10")  # per connection, in memory
REALTIME_MAX_CONNECTIONS_PER_USER = env_int("REALTIME_MAX_CONNECTIONS_PER_USER", 20)
# Frames over the limit get an error; this many more in a row and the socket is closed 4429.
REALTIME_FRAME_OVERRUN_CLOSE = env_int("REALTIME_FRAME_OVERRUN_CLOSE", 20)
# Addresses of proxies whose X-Forwarded-For is believed (comma-separated IPs).
REALTIME_TRUSTED_PROXIES = env_list("REALTIME_TRUSTED_PROXIES", [])

# --- REST and tokens --------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # JWTAuthentication that also refuses revoked tokens (sessions_app/tokens.py).
        "sessions_app.authentication.StandingJWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "sessions_app.pagination.Pagination",
    "PAGE_SIZE": env_int("API_PAGE_SIZE", 100),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON only: what clients send and what the schema documents (a malformed multipart
    # body was answered with an empty 400 that no client could read).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}
# The largest `?limit=` a list endpoint honours (larger asks get this many).
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 500)
# DRF throttles ("count/s|m|h|d", or "off"), counted in Redis so every node shares them; they
# fail open when Redis is unreachable, like the socket limits. Password guessing is limited
# per client address and per username; creating conversations per user.
API_THROTTLE_TOKEN_IP = env_str("API_THROTTLE_TOKEN_IP", "20/min")
API_THROTTLE_TOKEN_USERNAME = env_str("API_THROTTLE_TOKEN_USERNAME", "10/min")
API_THROTTLE_CONVERSATIONS = env_str("API_THROTTLE_CONVERSATIONS", "60/min")
# Token refreshes per client address (each locks a row and writes two).
API_THROTTLE_REFRESH_IP = env_str("API_THROTTLE_REFRESH_IP", "60/min")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # Keys are built by the throttles under REDIS_KEY_PREFIX (read per request).
        "KEY_FUNCTION": "sessions_app.throttles.cache_key",
        "OPTIONS": {"socket_timeout": REALTIME_REDIS_TIMEOUT, "socket_connect_timeout": REALTIME_REDIS_TIMEOUT},
    },
}

# The OpenAPI 3 schema at /api/schema/ (committed as docs/openapi.yaml), Swagger UI at
# /api/docs/ from the sidecar package's files: no CDN, works offline.
SPECTACULAR_SETTINGS = {
    "TITLE": "Tether REST API",
    "DESCRIPTION": "The REST side of Tether. The WebSocket protocol is docs/protocol.md "
    "(machine-readable: docs/asyncapi.yaml).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "sessions_app.openapi.add_error_responses",
    ],
}

# /metrics (Prometheus): allowed from these networks, or from anywhere with
# "Authorization: Bearer <METRICS_TOKEN>" when it is set.
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# `manage.py run_agents` serves its metrics here (0: no exporter); see docs/operations.md.
METRICS_WORKER_PORT = env_int("METRICS_WORKER_PORT", 0)
METRICS_WORKER_BIND = env_str("METRICS_WORKER_BIND", "127.0.0.1")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("ACCESS_TOKEN_LIFETIME", 300)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env_int("REFRESH_TOKEN_LIFETIME", 86400)),
    "ROTATE_REFRESH_TOKENS": env_bool("ROTATE_REFRESH_TOKENS", True),
    "BLACKLIST_AFTER_ROTATION": env_bool("BLACKLIST_AFTER_ROTATION", True),
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SIGNING_KEY,
    # Sign-in ids (`sid`) and token generations (`gen`), and the revocation checks on refresh.
    "TOKEN_OBTAIN_SERIALIZER": "sessions_app.auth_api.SignInSerializer",
    "TOKEN_REFRESH_SERIALIZER": "sessions_app.auth_api.StandingRefreshSerializer",
}

# A used (rotated) refresh token presented again within this many seconds is refused (two tabs
# racing one chain); after it, its whole sign-in is revoked: someone holds a copy (RFC 9700
# section 4.14.2; sessions_app/tokens.py).
REFRESH_TOKEN_REUSE_GRACE = env_float("REFRESH_TOKEN_REUSE_GRACE", 30.0)
# No token of a sign-in outlives its start (`auth_time`) by more than this, however often it is
# rotated: then the user signs in again with the password.
SIGN_IN_MAX_AGE = env_int("SIGN_IN_MAX_AGE", 7 * 86400)

# --- The realtime protocol ----------------------------------------------------------------
REALTIME_NODE_ID = env_str("REALTIME_NODE_ID", f"{socket.gethostname()}-{os.getpid()}")
REALTIME_PUBLIC_WS_URL = env_str("REALTIME_PUBLIC_WS_URL", "ws://127.0.0.1:8000/ws/v1/")
REALTIME_MAX_FRAME_BYTES = env_int("REALTIME_MAX_FRAME_BYTES", 64 * 1024)
REALTIME_MAX_MESSAGE_CHARS = env_int("REALTIME_MAX_MESSAGE_CHARS", 16000)
REALTIME_CONNECT_TIMEOUT = env_float("REALTIME_CONNECT_TIMEOUT", 10.0)
REALTIME_HEARTBEAT_INTERVAL_MS = env_int("REALTIME_HEARTBEAT_INTERVAL_MS", 25000)
REALTIME_HEARTBEAT_TIMEOUT = env_float(
    "REALTIME_HEARTBEAT_TIMEOUT", 2 * REALTIME_HEARTBEAT_INTERVAL_MS / 1000
)
REALTIME_TOKEN_WARNING = env_float("REALTIME_TOKEN_WARNING", 60.0)
REALTIME_BAD_FRAME_LIMIT = env_int("REALTIME_BAD_FRAME_LIMIT", 10)
REALTIME_BAD_FRAME_WINDOW = env_float("REALTIME_BAD_FRAME_WINDOW", 60.0)
REALTIME_REPLAY_BATCH = env_int("REALTIME_REPLAY_BATCH", 500)
# A socket whose transport holds more than this unsent waits (its sender pauses); when that lasts
# REALTIME_SEND_STALL_TIMEOUT seconds, the client is taken for one that stopped reading and is
# dropped (slow_consumer, 4408). Bounds a node's memory per socket.
REALTIME_MAX_UNSENT_BYTES = env_int("REALTIME_MAX_UNSENT_BYTES", 1024 * 1024)
REALTIME_SEND_STALL_TIMEOUT = env_float("REALTIME_SEND_STALL_TIMEOUT", 30.0)
# How often a connection re-reads the conversation's highest seq to catch a fan-out
# message the at-most-once layer dropped.
REALTIME_RESYNC_INTERVAL = env_float("REALTIME_RESYNC_INTERVAL", 10.0)
# Acks are stored at most this often per socket (and at close, and at each resync).
# Every resync (REALTIME_RESYNC_INTERVAL) stores the acks of all sockets in one batch anyway; a
# socket's own store is for longer resync intervals. We found per-socket stores every 5 s were a
# tenth of a streaming node's database time at 100 streams.
REALTIME_ACK_FLUSH_INTERVAL = env_float("REALTIME_ACK_FLUSH_INTERVAL", 30.0)
# Origins allowed for browser sockets (those that send Origin); default: ALLOWED_HOSTS.
# The same origins get CORS on the REST API (realtime/server/cors.py decides through
# django-cors-headers' signal, so both follow this one setting).
REALTIME_ALLOWED_ORIGINS = env_list("REALTIME_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/api/"

# Retention of the event log (see `manage.py prune_events`).
REALTIME_RETENTION_ACKED_DAYS = env_float("REALTIME_RETENTION_ACKED_DAYS", 7)
REALTIME_RETENTION_UNACKED_DAYS = env_float("REALTIME_RETENTION_UNACKED_DAYS", 30)
# Closed connection rows are kept this long (`manage.py prune_connections_and_tokens`).
REALTIME_RETENTION_CONNECTIONS_DAYS = env_float("REALTIME_RETENTION_CONNECTIONS_DAYS", 30)

# --- Agents ------------------------------------------------------------------------------
REALTIME_AGENT = env_str("REALTIME_AGENT", "realtime.agents.demo.DemoAgent")
# A run hands its agent (and the model) at most this many of the conversation's latest messages,
# its own included.
REALTIME_AGENT_HISTORY_MESSAGES = env_int("REALTIME_AGENT_HISTORY_MESSAGES", 100)
REALTIME_DEMO_AGENT_DELAY_MS = env_int("REALTIME_DEMO_AGENT_DELAY_MS", 40)
# Tools agents may call: dotted paths of realtime.tools.registry.Tool objects; set to an empty
# value for none (an agent whose model rejects a `tools` field).
REALTIME_TOOLS = (
    env_list("REALTIME_TOOLS", ["realtime.tools.demo.effect", "realtime.tools.demo.transfer"])
    if os.environ.get("REALTIME_TOOLS") != "" else []
)
# Every tool call's bound, seconds: a timeout is an `error` result (`unknown` for a `once` tool).
REALTIME_TOOL_TIMEOUT = env_float("REALTIME_TOOL_TIMEOUT", 30.0)
# How long an approval waits for a person's decision before it expires, seconds.
REALTIME_APPROVAL_TIMEOUT = env_float("REALTIME_APPROVAL_TIMEOUT", 600.0)
# A tool result larger than this (JSON bytes) is kept whole for the agent but not sent to
# clients: its `agent.tool_result` says `truncated`.
REALTIME_TOOL_RESULT_MAX_BYTES = env_int("REALTIME_TOOL_RESULT_MAX_BYTES", 16384)
# Where the demo's tools POST (`demo.effect`, `demo.transfer`); unset: `demo.effect` writes a
# row in Tether's database instead (a `local` tool) and `demo.transfer` calls nothing.
REALTIME_DEMO_EFFECT_URL = env_str("REALTIME_DEMO_EFFECT_URL", "")
REALTIME_DELTA_COALESCE_MS = env_int("REALTIME_DELTA_COALESCE_MS", 50)
# Under load the window grows (twice a group commit's recent duration), up to this.
REALTIME_DELTA_COALESCE_MAX_MS = env_int("REALTIME_DELTA_COALESCE_MAX_MS", 150)
REALTIME_RUN_LEASE_SECONDS = env_float("REALTIME_RUN_LEASE_SECONDS", 5.0)
REALTIME_RUN_SWEEP_INTERVAL = env_float("REALTIME_RUN_SWEEP_INTERVAL", 1.0)
REALTIME_RUN_TIMEOUT = env_float("REALTIME_RUN_TIMEOUT", 300.0)
REALTIME_RUN_AGENTS_IN_SERVER = env_bool("REALTIME_RUN_AGENTS_IN_SERVER", True)
REALTIME_MAX_CONCURRENT_RUNS = env_int("REALTIME_MAX_CONCURRENT_RUNS", 200)
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "https://api.openai.com/v1")
OPENAI_MODEL = env_str("OPENAI_MODEL", "gpt-4o-mini")
OPENAI_API_KEY = env_str("OPENAI_API_KEY", "")
OPENAI_TIMEOUT = env_float("OPENAI_TIMEOUT", 60.0)
# Model requests one run of the OpenAI-compatible agent may send (each tool round trip is one
# more); the last is sent with tool_choice "none", so the model answers in text.
REALTIME_AGENT_MAX_TURNS = env_int("REALTIME_AGENT_MAX_TURNS", 8)

TEST_RUNNER = "project.test_runner.PytestRunner"
