"""A melody job: generate with the requested model, write the files.

`run_generation_job` is the whole job as a plain function; worker/tasks.py only calls it. It runs
on a thread of a generate worker (Celery's threads pool), in the process that holds the loaded
models (worker/model_host.py): the job hands its request to the model's batcher and waits, writing
the finished bars to the job's event stream in groups as they come; the batcher's step loop
advances the melodies of every job the worker holds together. The job's deadline
(TUNESMITH_GENERATE_TIME_LIMIT) and its cancel act inside the batcher, at the next step: the
process's lease thread (worker/leases.py) sees a cancelled record and cancels the request.
"""
import base64
import concurrent.futures
import json
import logging
import shutil
import threading
import time
from concurrent.futures import CancelledError

import redis

from model.generation.batcher import DeadlineExceeded
from model.generation.params import MAX_PRIMER_BYTES, GenerationParams
from model.representation import notation
from model.representation.files import atomic_write
from worker.jobs import claim, fail
from worker.metrics import add_latency, count_state
from worker.records import FINISHED, now_iso
from worker.settings import BARS_EVERY_S
from worker.storage import artifact_name, job_dir, storage_problem
from worker.uploads import UploadInvalid, check_midi

log = logging.getLogger(__name__)
FAILOVER_S = 6.0    # how long a finished job keeps trying to record its result while the broker is away


def generate(host, path, request: GenerationParams, progress=None, time_limit=None, held=None, client=None):
    """Generate `request` with the checkpoint at `path` in this worker's batcher for it; returns the
    Generation. `progress` (a BarProgress) writes the finished bars as they come; `held` (the job's
    lease, worker/leases.py) gets the request's cancel as its `on_cancel`; `client` (who asked: the
    API's client id) places the request in the batcher's fair order of waiting requests."""
    started = time.perf_counter()
    handle = host.batcher(path).submit(request, on_bar=progress, time_limit=time_limit, client=client)
    if held is not None:
        held.on_cancel = handle.cancel
    generation = progress.follow(handle) if progress is not None else handle.result()
    log.info("%d melodies from %s in %.3f s", len(generation.melodies), path, time.perf_counter() - started)
    return generation


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


def harmonization(melody_base64: str) -> list:
    """A user's MIDI melody (base64, a primer's bounds) as [(its JSON, its Score)], the shape
    melody_files writes, to be harmonized."""
    from model.generation.sampling import Melody
    from model.representation.tokens import MelodyTokenizer
    from model.representation.written_chords import read_midi_melody
    tok = MelodyTokenizer()
    ids, tempo = read_midi_melody(base64.b64decode(melody_base64), tok, MAX_PRIMER_BYTES)
    notes, meters = tok.decode_notes(ids)
    melody = Melody(0, ids, notes, meters[0][1], tempo, tok)
    return [(melody.to_json(), tok.score(ids, tempo))]


def run_generation_job(runtime, host, job_id: str, max_attempts: int = 3) -> str:
    """Run one melody job to its end state, under this process's lease on it (worker/leases.py);
    returns that state (or 'skipped'). Its events (worker/events.py) follow: running, each finished
    bar, the end state."""
    record = claim(runtime, job_id, max_attempts)
    if record is None:
        return "skipped"
    with runtime.leases.hold(job_id) as held:
        state = _run(runtime, host, job_id, record, held)
    if state != "succeeded":            # a success was reported with its result (finish)
        _report_end(runtime, job_id, state)
    return state


def _run(runtime, host, job_id: str, record: dict, held) -> str:
    store, owner = runtime.jobs, held.owner
    with runtime.redis.pipeline(transaction=False) as pipe:     # a new attempt streams from bar 0
        runtime.events.add(pipe, job_id, [("state", {"state": "running", "attempt": record["attempts"]})])
        count_state(pipe, store.prefix, "melody", "running")
        pipe.execute()
    try:
        # every attempt of a job draws the same melodies: without a seed, the job id gives one
        params = {**record["params"]}
        if params.get("seed") is None:
            params["seed"] = int(job_id[:8], 16)
        if params.get("melody") is not None:         # a harmonization (POST /harmonizations): no model
            melodies, seed, generation_request = harmonization(params["melody"]), None, GenerationParams()
        else:
            path = runtime.models.path(params["model"])
            if path is None:
                raise UploadInvalid(f"model {params['model']!r} is no longer registered")
            generation_request = generation_params(params)
            generation = generate(host, path, generation_request, BarProgress(runtime, job_id),
                                  time_limit=runtime.settings["TUNESMITH_GENERATE_TIME_LIMIT"], held=held,
                                  client=record.get("client"))
            melodies, seed = scored(generation), generation.seed
        harmonized = generation_request if params.get("harmonize") or params.get("chords") is not None else None
        result, files = melody_files(job_id, melodies, seed, params["model"], harmonized)
        write_files(runtime.home, job_id, files)
    except CancelledError:
        return "cancelled"
    except (ValueError, DeadlineExceeded) as exc:   # bad parameters or primer, or too long: the user's to change
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
    if finish_when_the_broker_answers(runtime, job_id, owner, result, files, record.get("created_at")):
        return "succeeded"
    if store.is_cancelled(job_id):
        shutil.rmtree(job_dir(runtime.home, job_id), ignore_errors=True)   # cancelled while we worked
        runtime.redis.delete(runtime.files.key(job_id))
        return "cancelled"
    return "skipped"     # requeued or taken over meanwhile: the other attempt writes the same files


def finish_when_the_broker_answers(runtime, job_id: str, owner: str, result: dict, files: dict,
                                   created_at: str | None) -> bool:
    """`finish`, tried again for up to FAILOVER_S while the broker does not answer: a job done during
    a Sentinel failover records its result on the promoted primary instead of waiting for its lease
    to lapse and running again. Trying again is safe: the record's compare-and-set lets one finish
    through (a repeat that finds the job succeeded already returns False, and its end is reported
    from the record), and the kept files are the same bytes."""
    deadline = time.monotonic() + FAILOVER_S
    while True:
        try:
            return finish(runtime, job_id, owner, result, files, created_at)
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > deadline:
                raise
            log.warning("melody job %s: the broker does not answer; trying to record its result again", job_id)
            time.sleep(0.5)


def finish(runtime, job_id: str, owner: str, result: dict, files: dict, created_at: str | None) -> bool:
    """Record a success: the files kept in Redis (for API processes elsewhere) and the record's
    compare-and-set to succeeded, completions counted with it, in one round trip; then, if it was
    ours to finish, its end event and metrics in one more. False when the job was no longer ours
    (cancelled, or requeued and taken over)."""
    store = runtime.jobs
    with runtime.redis.pipeline(transaction=False) as pipe:
        runtime.files.keep(job_id, files, pipe)
        store.transition(job_id, ("running",), "succeeded", owner=owner, client=pipe, count="completions",
                         progress=1.0, result=result, finished_at=now_iso())
        done = pipe.execute()[-1] == 1
    if done:
        with runtime.redis.pipeline(transaction=False) as pipe:
            runtime.events.add(pipe, job_id, [("state", {"state": "succeeded", "result": result, "error": None})])
            count_state(pipe, store.prefix, "melody", "succeeded")
            if created_at:
                add_latency(pipe, store.prefix, created_at)
            try:
                pipe.execute()
            except Exception:             # the job is done; only its last event and metrics are missing
                log.warning("could not report job %s's success", job_id, exc_info=True)
    return done


def _report_end(runtime, job_id: str, state: str) -> None:
    """The job's last event, from its record (what the API shows: the error), and its metrics."""
    record = runtime.jobs.get(job_id) or {"state": state}
    if record["state"] in FINISHED:
        runtime.events.state(job_id, record["state"], result=record.get("result"), error=record.get("error"))
    if state == "failed":                # cancellations are counted where they are asked for
        count_state(runtime.redis, runtime.jobs.prefix, "melody", state)


class BarProgress:
    """on_bar for a job, and its waiting: each finished bar becomes an event, and the job's progress
    follows the first melody's first draw (never 1 before the end; a quality-gate redraw streams
    its bars from 0 again with a higher ``draw`` and leaves the progress where it was). The batcher's
    thread hands over the bars (``__call__``); the job's thread writes them (``follow``): the first
    at once, later ones in groups at most every TUNESMITH_BARS_EVERY_S, each group and the progress
    in one Redis round trip (under load a bar is done every ~50 ms, and written one by one they cost
    more than the rest of the job's work)."""

    def __init__(self, runtime, job_id: str):
        self.runtime, self.job_id = runtime, job_id
        self.every = runtime.settings.get("TUNESMITH_BARS_EVERY_S", BARS_EVERY_S)
        self.pending, self.progress = [], None
        self.shown = 0.0  # the progress last reported
        self.lock = threading.Lock()
        self.news = threading.Event()

    def __call__(self, event: dict) -> None:
        """A finished bar (on the batcher's thread)."""
        draw = event.get("draw", 1)
        with self.lock:
            progress = round(min(event["progress"], 0.99), 4) if draw == 1 else self.shown
            self.pending.append({"melody": event["melody"], "bar": event["bar"], "notes": event["notes"],
                                 "draw": draw, "progress": progress})
            if event["melody"] == 0 and draw == 1:  # a redraw (bars from 0 again) never moves progress back
                self.progress = self.shown = progress
        self.news.set()

    def follow(self, request):
        """Wait for the request, writing its bars as they come; returns its result (or raises its error)."""
        request.future.add_done_callback(lambda _: self.news.set())
        while True:
            self.news.wait()
            if request.future.done():
                break
            self.news.clear()
            self.flush()
            if self.every > 0:       # the next group: when it is due, or at the end
                concurrent.futures.wait([request.future], timeout=self.every)
        self.flush()
        return request.result()

    def flush(self) -> None:
        """Write the bars and progress taken since the last flush."""
        with self.lock:
            events, progress = [("bar", e) for e in self.pending], self.progress
            self.pending, self.progress = [], None
        if events or progress is not None:
            also = None if progress is None else \
                lambda pipe: self.runtime.jobs.update(self.job_id, client=pipe, progress=progress)
            self.runtime.events.publish_many(self.job_id, events, also=also)


def scored(generation) -> list:
    """A model.generation.sampling.Generation's melodies as [(JSON, Score)], what melody_files writes."""
    return [(m.to_json(), m.tokenizer.score(m.tokens, m.tempo)) for m in generation.melodies]


def write_files(home, job_id: str, files: dict) -> None:
    """The job's files into its folder, each written whole (a re-delivered job rewrites the same bytes)."""
    for name, data in files.items():
        atomic_write(job_dir(home, job_id) / name, data)


def melody_files(job_id: str, melodies: list, seed, model_name: str, harmonized=None) -> tuple[dict, dict]:
    """(the result links, {file name: bytes}): each melody's MIDI and JSON, what a job answers with
    (MusicXML, WAV and the zip are rendered on first download: worker/formats.py). `melodies`:
    [(a melody's JSON, its model.representation.notation.Score)]. `harmonized`: the request's
    GenerationParams when its melodies carry chords (its own, else estimated; model/generation/
    accompaniment.py): in the JSON and the result, and as the MIDI's accompaniment track."""
    base = f"/api/v1/melodies/{job_id}"
    entries, files = [], {}
    for index, (melody_json, score) in enumerate(melodies):
        entry = {"index": index, "midi": f"{base}/{index}.mid", "musicxml": f"{base}/{index}.musicxml",
                 "json": f"{base}/{index}.json", "wav": f"{base}/{index}.wav", "notes": len(score.notes)}
        if harmonized is not None:
            from model.generation import accompaniment
            spans = accompaniment.melody_chords(score, harmonized)
            melody_json = {**melody_json, "chords": accompaniment.chords_json(score, spans)}
            entry["chords"] = [c["chord"] for c in melody_json["chords"]]
            files[artifact_name(index, "mid")] = accompaniment.accompanied_midi(score, spans)
        else:
            files[artifact_name(index, "mid")] = notation.midi_bytes(score)
        files[artifact_name(index, "json")] = json.dumps(melody_json).encode()
        entries.append(entry)
    return {"seed": seed, "model": model_name, "melodies": entries, "zip": f"{base}.zip"}, files
