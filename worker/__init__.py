"""Celery for Tunesmith, in Flask's documented pattern: `celery_init_app(app)` builds the
Celery app from `app.config["CELERY"]`, and every task runs inside the Flask app context.

The tasks live in worker/tasks.py (`@shared_task`, thin adapters over worker/generation.py
and worker/training.py); worker/celery_worker.py is the entry module `celery -A` loads.
"""
from celery import Celery, Task


def celery_init_app(app) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
