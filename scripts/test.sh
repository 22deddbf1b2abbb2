#!/usr/bin/env bash
# Installs Tunesmith with its test extras into .venv, makes sure the services the
# tests need are present (Redis on 127.0.0.1:6379, Debian's chromium for browser
# tests), then runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'

redis_up() { .venv/bin/python -c "import redis,sys; redis.Redis('127.0.0.1', 6379, socket_timeout=1).ping()" 2>/dev/null; }
if ! redis_up; then
    if ! command -v redis-server >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
    fi
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 50); do redis_up && break; sleep 0.1; done
fi

if ! command -v chromium >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi

exec .venv/bin/python -m pytest -q "$@"
