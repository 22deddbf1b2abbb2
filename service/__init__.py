"""The Tunesmith HTTP service: `create_app()` is the only way to get the Flask app.

    gunicorn 'service:create_app()'        # production
    tunesmith serve                        # one machine: embedded Redis, workers, API

Configuration comes from environment variables (service/config.py); `test_config` overrides
keys for tests. The app holds a Redis client, the job store and the model registry in
`app.extensions["tunesmith"]`, and its Celery app in `app.extensions["celery"]`. Nothing here
imports torch: the same factory runs in worker parents before they fork.
"""
import importlib.util

import kombu.exceptions
import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from service.config import DEFAULT_REDIS_URL, celery_config, load_config
from service.jobs import JobStore
from service.registry import ModelRegistry
from service.schemas import RequestInvalid
from worker import celery_init_app


class Services:
    """What views and tasks share: Redis, job records, the registry, the storage folder."""

    def __init__(self, config):
        self.home = config["TUNESMITH_HOME"]
        self.redis = redis.Redis.from_url(config["REDIS_URL"] or DEFAULT_REDIS_URL,
                                          socket_connect_timeout=1, socket_timeout=2)
        self.jobs = JobStore(self.redis, config["TUNESMITH_KEY_PREFIX"], config["TUNESMITH_JOB_TTL"])
        self.models = ModelRegistry(self.home, config["TUNESMITH_DEFAULT_MODEL"])


def create_app(test_config=None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(load_config())
    if test_config:
        app.config.update(test_config)
        if "CELERY" not in test_config:
            c = app.config
            app.config["CELERY"] = {**c["CELERY"], **celery_config(
                c["REDIS_URL"], c["TUNESMITH_KEY_PREFIX"],
                c["CELERY"]["broker_transport_options"]["visibility_timeout"])}
    app.json.sort_keys = False

    app.extensions["tunesmith"] = Services(app.config)
    celery_init_app(app)

    from service import api, downloads, health, openapi
    app.register_blueprint(api.bp)
    app.register_blueprint(downloads.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    if importlib.util.find_spec("service.web"):      # the web pages (service/web.py)
        from service.web import bp as web_bp
        app.register_blueprint(web_bp)

    _register_error_handlers(app)
    return app


def _register_error_handlers(app):
    @app.errorhandler(RequestInvalid)
    def invalid(exc):
        return jsonify(error="validation failed", fields=exc.fields), 400

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    @app.errorhandler(kombu.exceptions.OperationalError)
    def broker_down(exc):
        return jsonify(error="broker unavailable, try again later", detail=str(exc)[:300]), 503

    @app.errorhandler(HTTPException)
    def http_error(exc):
        # JSON for the API; the web pages keep Flask's HTML errors
        from flask import request
        if request.path.startswith("/api/") or request.path in ("/healthz", "/readyz"):
            return jsonify(error=exc.description or exc.name), exc.code
        return exc
