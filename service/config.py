"""Service configuration: the job runtime's settings (worker/settings.py: storage folder, Redis,
key prefix, time limits, the Celery settings) plus the API's own, every one from an environment
variable with the `TUNESMITH_` prefix, read once by `load_config()`.

The API's own variables (the runtime's are listed in worker/settings.py):

| variable | default | meaning |
|---|---|---|
| `TUNESMITH_TOKEN` | (none) | bearer token for training, model-admin and any-job cancel; none = those endpoints answer 403 |
| `TUNESMITH_OPEN` | (unset) | `1`: with no token, leave training and admin endpoints open to anyone (an explicit opt-in) |
| `TUNESMITH_MAX_UPLOAD_MB` | `32` | request body limit (Flask `MAX_CONTENT_LENGTH`) |
| `TUNESMITH_MAX_STREAMS` | `256` | open event streams (`/jobs/<id>/events`) and `Prefer: wait` requests per API process; more get 503 |
| `TUNESMITH_HEADER_TIMEOUT` | `5` | seconds for a request's line and headers (and an idle keep-alive), or the connection is closed (service/front.py) |
| `TUNESMITH_BODY_TIMEOUT` | `10` | seconds a request body may stall between two reads, or 408 and the connection is closed |
| `TUNESMITH_PROXIES` | `0` | proxies in front whose X-Forwarded-For is trusted for the client's address (docker-compose.yml: 1) |
| `TUNESMITH_MAX_BACKLOG_WORK` | `131072` | unfinished melody work of all clients, in bar-melodies (bars x count); beyond it new jobs get 503 |
| `TUNESMITH_MAX_CLIENT_WORK` | `8192` | one client's unfinished melody work; beyond it 429 |
| `TUNESMITH_RATE_LIMIT` | `60/minute` | job submissions per client (a Flask-Limiter rate; empty: none); beyond it 429 |
| `TUNESMITH_MIN_FREE_MB` | `32` | new jobs get 503 while TUNESMITH_HOME has less free space (service/disk.py) |
"""
import os

from worker import env_number, load_settings, open_without_token

CONNECTIONS_PER_PROCESS = 1000     # client connections an API process takes at once (service/cli.py: api_command)


def load_config(environ=None) -> dict:
    """Flask config keys from the environment (`environ` defaults to `os.environ`)."""
    env = os.environ if environ is None else environ
    config = load_settings(env)
    config["TUNESMITH_TOKEN"] = env.get("TUNESMITH_TOKEN") or None
    config["TUNESMITH_OPEN"] = open_without_token(env)
    config["MAX_CONTENT_LENGTH"] = env_number(env, "MAX_UPLOAD_MB", 32) * 1024 * 1024
    config["TUNESMITH_MAX_STREAMS"] = env_number(env, "MAX_STREAMS", 256)
    config["TUNESMITH_HEADER_TIMEOUT"] = env_number(env, "HEADER_TIMEOUT", 5)
    config["TUNESMITH_BODY_TIMEOUT"] = env_number(env, "BODY_TIMEOUT", 10, float)
    config["TUNESMITH_PROXIES"] = env_number(env, "PROXIES", 0)
    # a Redis connection for each request in flight and each open stream, so that none waits for one
    config["REDIS_CONNECTIONS"] = CONNECTIONS_PER_PROCESS + config["TUNESMITH_MAX_STREAMS"]
    for name in ("TUNESMITH_HEADER_TIMEOUT", "TUNESMITH_BODY_TIMEOUT"):
        if config[name] < 1:        # gunicorn reads 0 as no timeout at all
            raise ValueError(f"{name} must be at least 1 (seconds), got {config[name]}")
    config["TUNESMITH_MAX_BACKLOG_WORK"] = env_number(env, "MAX_BACKLOG_WORK", 131072)
    config["TUNESMITH_MAX_CLIENT_WORK"] = env_number(env, "MAX_CLIENT_WORK", 8192)
    config["TUNESMITH_RATE_LIMIT"] = env.get("TUNESMITH_RATE_LIMIT", "60/minute").strip()
    config["TUNESMITH_MIN_FREE_MB"] = env_number(env, "MIN_FREE_MB", 32, float)
    return config
