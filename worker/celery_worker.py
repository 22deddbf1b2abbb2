"""The module `celery -A worker.celery_worker worker -Q generate` loads: the Celery app, configured
from the environment (worker/settings.py), and its tasks. No Flask app is built.

No torch here: this runs in the worker's parent process, before it forks its children.
"""
from worker.runtime import make_celery
from worker.settings import load_settings

celery_app = make_celery(load_settings())
celery_app.set_default()

from worker import tasks  # noqa: E402,F401  (registers the tasks with the app above)
