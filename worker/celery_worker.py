"""The module `celery -A worker.celery_worker worker -Q generate` loads: it builds the Flask
app (configuration from the environment), whose Celery app then finds the tasks.

No torch here: this runs in the worker's parent process, before it forks its children.
"""
from service import create_app
from worker import tasks  # noqa: F401  (registers the tasks)

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
