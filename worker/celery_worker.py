"""The module `celery -A worker.celery_worker worker -Q generate` loads: the Celery app, configured
from the environment (worker/settings.py), its tasks, and four additions to every worker:

- a generate worker (Celery's threads pool: its tasks are threads of this one process) loads its
  default model into its batcher before it consumes anything (worker/model_host.py), and says so
  in Redis for `/readyz`;

- the lease reaper (worker/leases.py), run every few seconds in the worker's parent process: a
  job whose worker died is queued again once its lease lapses, one whose message was lost too;
- each pool process of a train worker (prefork) dies with the worker's parent (worker/lifetime.py),
  so a SIGKILLed worker leaves no orphan holding a job;
- a warning in the log at start when the broker would lose accepted jobs on a restart.

No Flask app is built, and no torch at import: this runs in a train worker's parent process too,
before it forks its children; only a generate worker imports torch, when it starts.
"""
import logging
import threading

from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

from worker.leases import REAP_EVERY_S, reap
from worker.lifetime import die_with_parent
from worker.runtime import Runtime, make_celery, persistence_warning, runtime_of
from worker.settings import load_settings

log = logging.getLogger(__name__)
celery_app = make_celery(load_settings())
celery_app.set_default()


class LeaseReaper:
    """`reap` every REAP_EVERY_S from a thread of the worker's parent process, with a Runtime of its
    own (Redis client, publisher). A thread, not an entry on the worker's timer: the consumer drops
    timer entries when it reconnects after a broker restart, the moment the reaper is needed most.
    A pool process forked meanwhile never touches this thread's objects."""

    def __init__(self):
        self.stopped = threading.Event()
        self.thread = None

    def start(self, settings) -> None:
        runtime = Runtime(settings)
        self.thread = threading.Thread(target=self._run, args=(runtime,), name="lease-reaper", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _run(self, runtime) -> None:
        while not self.stopped.wait(REAP_EVERY_S):
            try:
                reap(runtime)
            except Exception as exc:      # the broker away: the next beat tries again
                log.warning("reaping lapsed leases failed: %s", exc)


reaper = LeaseReaper()


@worker_ready.connect
def _start_reaper(sender=None, **kwargs):
    reaper.start(celery_app.tunesmith_settings)


@worker_shutdown.connect
def _stop_reaper(sender=None, **kwargs):
    reaper.stop()


@worker_init.connect
def _load_the_models(sender=None, **kwargs):
    """A generate worker: the default model loaded and warmed in this process before the worker
    consumes (its queues are known here; its pool is not started yet)."""
    if "generate" not in celery_app.amqp.queues.consume_from:
        return
    from worker.model_host import ModelHost, say_loading
    runtime = runtime_of(celery_app)
    try:
        say_loading(runtime.redis, runtime.jobs.prefix, sender.hostname)
    except Exception as exc:                     # Redis away: /readyz checks the checkpoint itself
        log.warning("could not say the models are loading: %s", exc)
    import torch
    from worker.metrics import EngineMeter
    torch.set_num_threads(1)                     # one thread: 2 cores shared by many processes
    host = celery_app.tunesmith_model_host = ModelHost(
        celery_app.tunesmith_settings, sender.hostname, EngineMeter(runtime.redis, runtime.jobs.prefix))
    host.start(runtime)


@worker_shutdown.connect
def _not_ready_any_more(sender=None, **kwargs):
    host = getattr(celery_app, "tunesmith_model_host", None)
    if host is not None:
        host.stop(runtime_of(celery_app))


@worker_process_init.connect
def _die_with_the_worker(**kwargs):
    die_with_parent()


@worker_ready.connect
def _warn_without_persistence(sender=None, **kwargs):
    try:
        warning = persistence_warning(Runtime(celery_app.tunesmith_settings).redis)
    except Exception as exc:              # never stop a worker over a warning
        warning = f"could not ask Redis about persistence ({type(exc).__name__})"
    if warning:
        log.warning("%s", warning)


from worker import tasks  # noqa: E402,F401  (registers the tasks with the app above)
