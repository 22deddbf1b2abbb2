"""A melody job: generate with the requested model, write the files.

`run_generation_job` is the whole job as a plain function; worker/tasks.py only calls it.
The pool process running it holds no model: it sends the request to its worker's generation
engine (worker/engine.py), where the melodies of every job the worker holds advance together in
one step loop per model (worker/batcher.py). The engine keeps one `Generator` per checkpoint path
and modification time: a new default model (another path) or a retrained file (new mtime) is
loaded on the next request. Each finished bar moves the job's progress on; the files are written
here from the engine's plain result (model/representation/notation.py), so a pool process never imports torch.
"""
import base64
import json
import logging
import os
import shutil
import time

import redis

from model.representation import notation
from model.generation.params import MAX_PRIMER_BYTES, GenerationParams
from worker.engine import Cancelled, EngineClient
from worker.jobs import claim, fail
from worker.leases import LeaseKeeper
from worker.metrics import count_state, observe_latency
from worker.records import FINISHED, now_iso
from worker.settings import BARS_EVERY_S
from model.representation.files import atomic_write
from worker.storage import artifact_name, job_dir, storage_problem
from worker.uploads import UploadInvalid, check_midi

log = logging.getLogger(__name__)


_ENGINE: EngineClient | None = None


def generate(path, request: GenerationParams, on_bar=None, should_stop=None, settings=None, client=None) -> dict:
    """Generate with the checkpoint at `path` in this worker's engine; returns its plain result
    (worker/engine.py). `on_bar`, `should_stop` and `client` as in `EngineClient.generate`."""
    global _ENGINE
    if _ENGINE is None or _ENGINE.worker_pid != os.getppid():
        settings = settings or {}
        _ENGINE = EngineClient(os.getppid(), batching=settings.get("TUNESMITH_BATCHING", True),
                               max_rows=settings.get("TUNESMITH_BATCH_ROWS", 64),
                               bars_every=settings.get("TUNESMITH_BARS_EVERY_S", BARS_EVERY_S))
    started = time.perf_counter()
    result = _ENGINE.generate(path, request, on_bar=on_bar, should_stop=should_stop, client=client)
    log.info("%d melodies from %s in %.3f s (pid %d)", len(result["melodies"]), path,
             time.perf_counter() - started, os.getpid())
    return result


def generation_params(params: dict) -> GenerationParams:
    """The API's stored parameters -> model.generation.params.GenerationParams (primer checked first)."""
    fields = {k: v for k, v in params.items() if k not in ("model", "harmonize")}
    primer = fields.get("primer")
    if isinstance(primer, str):
        data = base64.b64decode(primer)
        check_midi(data, "primer", max_bytes=MAX_PRIMER_BYTES)
        fields["primer"] = data
    elif primer is not None:
        fields["primer"] = [list(note) for note in primer]
    return GenerationParams(**fields)         # Generator.generate validates against the model


def harmonization(melody_base64: str) -> dict:
    """A user's MIDI melody (base64, a primer's bounds) as the plain result of a one-melody generation
    (worker/engine.py's shape), for write_melodies to harmonize."""
    from model.generation.sampling import Melody
    from model.representation.tokens import MelodyTokenizer
    from model.representation.written_chords import read_midi_melody
    tok = MelodyTokenizer()
    ids, tempo = read_midi_melody(base64.b64decode(melody_base64), tok, MAX_PRIMER_BYTES)
    notes, meters = tok.decode_notes(ids)
    melody = Melody(0, ids, notes, meters[0][1], tempo, tok)
    return {"seed": None, "model": None, "seconds": 0.0,
            "melodies": [{"index": 0, "json": melody.to_json(), "score": tok.score(ids, tempo).to_dict()}]}


def run_generation_job(runtime, job_id: str, max_attempts: int = 3) -> str:
    """Run one melody job to its end state, under a lease renewed while it runs (worker/leases.py);
    returns that state (or 'skipped'). Its events (worker/events.py) follow: running, each finished
    bar, the end state."""
    record = claim(runtime, job_id, max_attempts)
    if record is None:
        return "skipped"
    with LeaseKeeper(runtime.jobs, job_id, runtime.lease_s) as lease:
        state = _run(runtime, job_id, record, lease.owner)
    _report_end(runtime, job_id, state)
    return state


def _run(runtime, job_id: str, record: dict, owner: str) -> str:
    store = runtime.jobs
    runtime.events.state(job_id, "running", attempt=record["attempts"])   # a new attempt streams from bar 0
    count_state(runtime.redis, store.prefix, "melody", "running")
    try:
        # every attempt of a job draws the same melodies: without a seed, the job id gives one
        params = {**record["params"]}
        if params.get("seed") is None:
            params["seed"] = int(job_id[:8], 16)
        if params.get("melody") is not None:         # a harmonization (POST /harmonizations): no model
            generation, generation_request = harmonization(params["melody"]), GenerationParams()
        else:
            path = runtime.models.path(params["model"])
            if path is None:
                raise UploadInvalid(f"model {params['model']!r} is no longer registered")
            generation_request = generation_params(params)
            generation = generate(path, generation_request, on_bar=BarProgress(runtime, job_id),
                                  should_stop=lambda: store.is_cancelled(job_id), settings=runtime.settings,
                                  client=record.get("client"))
        if store.is_cancelled(job_id):
            return "cancelled"
        harmonized = generation_request if params.get("harmonize") or params.get("chords") is not None else None
        result = write_melodies(runtime.home, job_id, generation, params["model"], keep=runtime.files.keep,
                                harmonized=harmonized)
    except Cancelled:
        return "cancelled"
    except ValueError as exc:        # bad parameters or primer (UploadInvalid): the user's to fix
        fail(runtime, job_id, str(exc), owner)
        return "failed"
    except (redis.ConnectionError, redis.TimeoutError):
        # the broker went away mid-job (a failover, a network cut): nothing is wrong with the job, and
        # its record cannot be written now anyway; its lease lapses and the reaper queues it again
        log.warning("melody job %s: the broker went away; the job runs again once its lease lapses", job_id)
        raise
    except Exception as exc:                          # anything else: report it, keep the worker alive
        log.exception("melody job %s failed", job_id)
        problem = storage_problem(exc)
        fail(runtime, job_id, f"the server's storage is {problem}: the melodies could not be written; submit "
                              f"the job again later" if problem else f"{type(exc).__name__}: {exc}", owner)
        return "failed"
    if store.transition(job_id, ("running",), "succeeded", owner=owner, progress=1.0, result=result,
                        finished_at=now_iso()):
        store.count(job_id, "completions")
        return "succeeded"
    if store.is_cancelled(job_id):
        shutil.rmtree(job_dir(runtime.home, job_id), ignore_errors=True)   # cancelled while we worked
        runtime.redis.delete(runtime.files.key(job_id))
        return "cancelled"
    return "skipped"     # requeued or taken over meanwhile: the other attempt writes the same files


def _report_end(runtime, job_id: str, state: str) -> None:
    """The job's last event, from its record (what the API shows: result links or the error), and its metrics."""
    record = runtime.jobs.get(job_id) or {"state": state}
    if record["state"] in FINISHED:
        runtime.events.state(job_id, record["state"], result=record.get("result"), error=record.get("error"))
    if state in ("succeeded", "failed"):                  # cancellations are counted where they are asked for
        count_state(runtime.redis, runtime.jobs.prefix, "melody", state)
    if state == "succeeded" and record.get("created_at"):
        observe_latency(runtime.redis, runtime.jobs.prefix, record["created_at"])


class BarProgress:
    """on_bar for a job: each finished bar becomes an event, and the job's progress follows the
    first melody's first draw (never 1 before the end; a quality-gate redraw streams its bars
    from 0 again with a higher ``draw`` and leaves the progress where it was). The engine sends
    bars in groups (the first alone, then at most every worker.engine.BARS_EVERY_S seconds) and
    ``flush`` writes each group and the progress in one Redis round trip: under load a bar is done
    every ~50 ms, and writing each one alone cost a pool process 0.6 ms of CPU per bar, 17 times
    per 16-bar job, more than the rest of the job's work."""

    def __init__(self, runtime, job_id: str):
        self.runtime, self.job_id = runtime, job_id
        self.pending, self.progress = [], None
        self.shown = 0.0  # the progress last reported

    def __call__(self, event: dict) -> None:
        draw = event.get("draw", 1)
        progress = round(min(event["progress"], 0.99), 4) if draw == 1 else self.shown
        self.pending.append({"melody": event["melody"], "bar": event["bar"], "notes": event["notes"],
                             "draw": draw, "progress": progress})
        if event["melody"] == 0 and draw == 1:  # a redraw (bars from 0 again) never moves progress back
            self.progress = self.shown = progress

    def flush(self) -> None:
        """Write the bars and progress taken since the last flush (EngineClient: after each group)."""
        events, progress = [("bar", e) for e in self.pending], self.progress
        self.pending, self.progress = [], None
        if events or progress is not None:
            also = None if progress is None else \
                lambda pipe: self.runtime.jobs.update(self.job_id, client=pipe, progress=progress)
            self.runtime.events.publish_many(self.job_id, events, also=also)


def write_melodies(home, job_id: str, generation: dict, model_name: str, keep=None, harmonized=None) -> dict:
    """Write each melody's MIDI and JSON (what the job answers with); return the result links.
    `keep(job_id, {name: bytes})` keeps them where API processes on other machines read them
    (Redis: worker/formats.py, which also renders MusicXML, WAV and the zip on first download).
    `generation` is the engine's plain result (worker/engine.py). `harmonized`: the request's
    GenerationParams when its melodies carry chords (its own, else estimated; model/generation/
    accompaniment.py): in the JSON and the result, and as the MIDI's accompaniment track."""
    folder = job_dir(home, job_id)
    base = f"/api/v1/melodies/{job_id}"
    melodies, files = [], {}
    for index, melody in enumerate(generation["melodies"]):
        score = notation.Score.from_dict(melody["score"])
        entry = {"index": index, "midi": f"{base}/{index}.mid", "musicxml": f"{base}/{index}.musicxml",
                 "json": f"{base}/{index}.json", "wav": f"{base}/{index}.wav", "notes": len(score.notes)}
        melody_json = melody["json"]
        if harmonized is not None:
            # imported here: it imports torch, which a worker's parent process must not before the fork
            from model.generation import accompaniment
            spans = accompaniment.melody_chords(score, harmonized)
            melody_json = {**melody_json, "chords": accompaniment.chords_json(score, spans)}
            entry["chords"] = [c["chord"] for c in melody_json["chords"]]
            files[artifact_name(index, "mid")] = accompaniment.accompanied_midi(score, spans)
        else:
            files[artifact_name(index, "mid")] = notation.midi_bytes(score)
        files[artifact_name(index, "json")] = json.dumps(melody_json).encode()
        melodies.append(entry)
    if keep is not None:
        keep(job_id, files)
    for name, data in files.items():
        atomic_write(folder / name, data)
    return {"seed": generation["seed"], "model": model_name, "melodies": melodies, "zip": f"{base}.zip"}
