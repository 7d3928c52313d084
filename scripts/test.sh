#!/usr/bin/env bash
# Runs the test suite against real services: starts PostgreSQL and Redis if they are down and makes a
# fresh database for this run. Set TEST_ALL=1 to include every slow real-model test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

# Types and lint first, from the repo root with pyproject's settings: an error fails the run before any test.
"$PY" -m ruff check .
"$PY" -m mypy

if command -v pg_ctlcluster >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

# docker-compose.yml is validated with Debian's docker-compose (no engine needed).
if ! command -v docker-compose >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) >/dev/null 2>&1 \
    || echo "warning: could not install docker-compose; the compose test will be skipped"
fi

# The dashboard's browser tests drive Debian's headless Chromium (Playwright cannot download a browser here).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "warning: could not install chromium; the browser tests (tests/browser) will be skipped"
fi

db="adalora_test_$$"
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE $db" postgres
  trap 'psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" postgres || true' EXIT
  export TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:5432/$db"
fi
export TEST_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# One torch thread per process: the tests run workers beside the test process on a couple of cores, and
# OpenMP threads that spin-wait for a busy core made a 14 s tiny job take over 100 s under load.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

if [ "${TEST_ALL:-}" = 1 ]; then marker=""; else marker="not slow or ci"; fi
"$PY" -m pytest ${marker:+-m "$marker"} "$@"
