"""The Tunesmith HTTP service: `create_app()` is the only way to get the Flask app.

    gunicorn 'service:create_app()'        # production
    tunesmith serve                        # one machine: embedded Redis, workers, API

Configuration comes from environment variables (service/config.py); `test_config` overrides
keys for tests. The app holds the job runtime (`worker.Runtime`: Redis, the job store, the model
registry, the storage folder) in `app.extensions["tunesmith"]`, and its Celery app, which
publishes jobs by task name, in `app.extensions["celery"]`. The service reaches the job runtime
only through the `worker` package's interface (worker/__init__.py), and never imports torch.
"""
import importlib.util

import kombu.exceptions
import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from service.config import load_config
from service.schemas import RequestInvalid
from worker import Runtime, celery_config


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

    runtime = Runtime(app.config)
    app.extensions["tunesmith"] = runtime
    app.extensions["celery"] = runtime.celery

    from service import admission, api, disk, downloads, events, front, headers, health, metrics, openapi
    app.register_blueprint(api.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(downloads.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    if importlib.util.find_spec("service.web"):      # the web pages (service/web.py)
        from service.web import bp as web_bp
        app.register_blueprint(web_bp)

    _register_error_handlers(app)
    disk.init_app(app)
    admission.init_app(app, api.client_id)
    headers.init_app(app)
    events.init_app(app)
    front.init_app(app)
    if not app.config["TUNESMITH_TOKEN"] and not app.config.get("TUNESMITH_OPEN"):
        app.logger.warning("no TUNESMITH_TOKEN: training and admin endpoints answer 403 "
                           "(set a token, or TUNESMITH_OPEN=1 to leave them open)")
    return app


BROKER_RETRY_AFTER_S = 5   # what a client is told to wait when the broker does not answer


def _register_error_handlers(app):
    @app.errorhandler(RequestInvalid)
    def invalid(exc):
        return jsonify(error="validation failed", fields=exc.fields), 400

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    @app.errorhandler(kombu.exceptions.OperationalError)
    def broker_down(exc):
        # the broker's address stays in the log: it is no business of the client's
        app.logger.warning("broker unavailable: %s", exc)
        return jsonify(error="broker unavailable, try again later"), 503, {"Retry-After": str(BROKER_RETRY_AFTER_S)}

    @app.errorhandler(HTTPException)
    def http_error(exc):
        # JSON for the API; the web pages keep Flask's HTML errors
        from flask import request
        if exc.response is not None:                # an answer of its own (a rate limit's JSON)
            return exc.response
        if request.path.startswith("/api/") or request.path in ("/healthz", "/readyz"):
            return jsonify(error=exc.description or exc.name), exc.code
        return exc
