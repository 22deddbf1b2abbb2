"""A training job: unpack the data, train with progress in the job record, register the model.

`run_training_job` is the whole job as a plain function; worker/tasks.py only calls it.
`model.training.trainer.train` writes `jobs/<id>/model.pt` and a resume file after every epoch; a
re-delivered job (its worker died) resumes from there. Cancelling the job makes
`should_stop()` true, and the job stops in whatever phase it is: unpacking the upload (between
files), parsing the corpus (in a child process, `load_corpus_or_stop`, killed at once), training
(at its next step, after a checkpoint).
"""
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import model                                  # the package root only (where the child runs)
from worker.jobs import claim, fail
from worker.lifetime import preexec
from worker.records import now_iso
from worker.storage import job_dir
from model.representation.files import atomic_write
from worker.uploads import Stopped, UploadInvalid, extract_midi_zip

log = logging.getLogger(__name__)
WRITE_EVERY_S = 0.5         # progress writes to Redis at most this often (epochs always)


def train_config(params: dict, data_spec: str, out):
    from model.training.config import TrainConfig
    return TrainConfig(data=data_spec, out=str(out), cell=params["cell"], hidden_size=params["hidden_size"],
                       layers=params["layers"], embedding_dim=params["embedding_dim"], dropout=params["dropout"],
                       bptt=params["bptt"], batch_size=params.get("batch_size"), lr=params.get("lr"),
                       clip=params["clip"], epochs=params.get("epochs"), max_minutes=params["max_minutes"],
                       valid=params["valid"], patience=params.get("patience"), transpose=params.get("transpose"),
                       from_scratch=params.get("from_scratch", False),  # unset: fine-tune the shipped model if it fits
                       short_term=params.get("short_term", True), threads=None,  # the cores not busy at the start
                       remaining_inputs=params.get("remaining_inputs", TrainConfig.remaining_inputs),
                       max_remaining=params.get("max_remaining", TrainConfig.max_remaining),
                       end_weight=params.get("end_weight", TrainConfig.end_weight),
                       key_inputs=params.get("key_inputs", TrainConfig.key_inputs))


def prepare_data(home, job_id: str, params: dict, should_stop=None, fetch=None) -> str:
    """The corpus spec to train on: a music21 collection, or the folder of the uploaded MIDI
    (unpacked beside it and moved into place whole, so a job killed half-way unpacks again;
    `should_stop` is asked between files: worker.uploads.Stopped). The upload comes from where the
    API kept it, `fetch("upload.zip")` (Redis: worker.formats.KeptFiles), when it is not on this
    host's disk yet."""
    if params["data"].startswith("music21:"):
        return params["data"]
    folder = job_dir(home, job_id)
    data_dir = folder / "data"
    if not data_dir.is_dir() and not (folder / "upload.zip").is_file():
        upload = fetch("upload.zip") if fetch is not None else None
        if upload is None:
            raise UploadInvalid("the uploaded zip is gone (it expired, or the broker lost it); upload it again")
        atomic_write(folder / "upload.zip", upload)
    if not data_dir.is_dir():
        partial = folder / "data.partial"
        shutil.rmtree(partial, ignore_errors=True)
        kept, skipped = extract_midi_zip(folder / "upload.zip", partial, should_stop)
        os.replace(partial, data_dir)
        log.info("job %s: %d MIDI files, %d skipped", job_id, len(kept), len(skipped))
    return str(data_dir)


class ProgressWriter:
    """`progress` and `should_stop` callbacks for `train`, backed by the job record."""

    def __init__(self, store, job_id):
        self.store, self.job_id = store, job_id
        self.last_write = self.last_check = 0.0
        self.cancelled = False
        self.last = {}

    def __call__(self, event: dict) -> None:
        now = time.monotonic()
        if event["event"] == "step" and now - self.last_write < WRITE_EVERY_S:
            return
        self.last_write = now
        epochs, spe = event["epochs"], event.get("steps_per_epoch") or 0
        if event["event"] == "step" and spe:
            done = (event["epoch"] - 1 + event["step"] / spe) / epochs
        else:
            done = event["epoch"] / epochs
        history = [{k: h.get(k) for k in ("epoch", "train_loss", "valid_loss", "tokens_per_s", "seconds")}
                   for h in event["history"]]
        training = {"epoch": event["epoch"], "epochs": epochs, "step": event["step"], "steps_per_epoch": spe or None,
                    "train_loss": event.get("train_loss"), "history": history,
                    "tokens_per_s": event.get("tokens_per_s"), "eta_s": event.get("eta_s"), "model": None,
                    "recipe": event.get("recipe")}  # what the run chose and why (model/training/recipe.py)
        for name in ("steps_per_epoch", "train_loss", "tokens_per_s"):   # the 'done' event lacks these
            if training[name] is None:
                training[name] = self.last.get(name)
        if event["event"] == "done":
            training["eta_s"] = 0.0
        self.last = training
        self.store.transition(self.job_id, ("running",), progress=round(min(done, 0.99), 4), training=training)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.last_check >= WRITE_EVERY_S:
            self.last_check = now
            self.cancelled = self.store.is_cancelled(self.job_id)
        return self.cancelled


# argv: corpus spec, steps per quarter. Parses the corpus into model/representation/corpora.py's cache, then exits.
_LOAD_CORPUS = """import sys
from model.representation.corpora import load_corpus
from model.representation.tokens import TokenizerConfig
load_corpus(sys.argv[1], TokenizerConfig(steps_per_quarter=int(sys.argv[2])), workers=1, progress=False)
"""


def load_corpus_or_stop(spec: str, steps_per_quarter: int, should_stop):
    """The corpus, parsed in a child process that a cancel ends at once (parsing with music21 is
    minutes of pure Python that checks nothing), then read back from the cache the child wrote.
    None when `should_stop()` came true first."""
    from model.representation.corpora import load_corpus
    from model.representation.tokens import TokenizerConfig
    child = subprocess.Popen([sys.executable, "-c", _LOAD_CORPUS, spec, str(steps_per_quarter)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=preexec(),
                             cwd=Path(model.__file__).resolve().parent.parent)
    try:
        while child.poll() is None:
            if should_stop():
                return None
            time.sleep(0.1)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # the cache the child wrote (a failed child: the same error, raised here, where it is reported)
    return load_corpus(spec, TokenizerConfig(steps_per_quarter=steps_per_quarter), workers=1, progress=False)


def run_training_job(runtime, job_id: str, max_attempts: int = 3) -> str:
    """Run one training job to its end state, under a lease renewed while it runs (worker/leases.py);
    returns that state (or 'skipped')."""
    record = claim(runtime, job_id, max_attempts)
    if record is None:
        return "skipped"
    with runtime.leases.hold(job_id) as held:
        return _run(runtime, job_id, record, held.owner)


def _run(runtime, job_id: str, record: dict, owner: str) -> str:
    store, params = runtime.jobs, record["params"]
    folder = job_dir(runtime.home, job_id)
    try:
        from model.training.trainer import train
        writer = ProgressWriter(store, job_id)
        config = train_config(params, prepare_data(runtime.home, job_id, params, writer.should_stop,
                                                  runtime.files.fetcher(job_id)),
                              folder / "model.pt")
        corpus = load_corpus_or_stop(config.data, config.steps_per_quarter, writer.should_stop)
        if corpus is None:
            return "cancelled"
        resume = config.resume_path().exists()          # a re-delivered job picks up where it stopped
        outcome = train(config, progress=writer, should_stop=writer.should_stop, resume=resume,
                        corpus=corpus, show_progress=False)
        if outcome["stopped"] == "should_stop":
            return "cancelled"
        name = runtime.models.register(params["name"], outcome["checkpoint"], meta={
            "data": params["data"], "metrics": outcome["metrics"], "job": job_id,
            "params": {k: v for k, v in params.items() if k != "name"}, "created": now_iso()})
    except Stopped:                         # cancelled while the upload was unpacked
        return "cancelled"
    except ValueError as exc:               # bad data or settings (UploadInvalid included)
        fail(runtime, job_id, str(exc), owner)
        return "failed"
    except Exception as exc:                 # report it; keep the worker alive
        log.exception("training job %s failed", job_id)
        fail(runtime, job_id, f"{type(exc).__name__}: {exc}", owner)
        return "failed"
    record = store.get(job_id)
    training = {**(record.get("training") or {}), "model": name}
    result = {"model": name, "metrics": outcome["metrics"], "stopped": outcome["stopped"],
              "checkpoint": f"models/{name}/model.pt"}
    if store.transition(job_id, ("running",), "succeeded", owner=owner, count="completions", progress=1.0,
                        result=result, training=training, finished_at=now_iso()):
        return "succeeded"
    return "cancelled" if store.is_cancelled(job_id) else "skipped"

