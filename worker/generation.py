"""A melody job: generate with the requested model, write the files.

`run_generation_job` is the whole job as a plain function; worker/tasks.py only calls it.
The model is loaded through `model.sampling.generate_melody`, whose cache keeps one `Generator`
per process, keyed by checkpoint path and modification time: the first task in a fresh worker
child loads the model, later ones reuse it, and a new default model (another path) or a
retrained file (new mtime) is loaded on the next task.
"""
import base64
import io
import json
import logging
import os
import shutil
import time
import zipfile

from model.params import MAX_PRIMER_BYTES, GenerationParams
from worker.jobs import claim, fail
from worker.leases import LeaseKeeper
from worker.records import now_iso
from worker.storage import artifact_name, atomic_write, job_dir
from worker.uploads import UploadInvalid, check_midi

log = logging.getLogger(__name__)
FORMATS = ("mid", "musicxml", "json")


def generate(path, request: GenerationParams):
    """Generate with the checkpoint at `path` (loaded at most once per process and file version)."""
    import torch
    torch.set_num_threads(1)                  # one thread per worker process (2 cores, many procs)
    from model.sampling import generate_melody
    started = time.perf_counter()
    generation = generate_melody(request, model=path)
    log.info("%d melodies from %s in %.2f s (pid %d)", len(generation.melodies), path,
             time.perf_counter() - started, os.getpid())
    return generation


def generation_params(params: dict) -> GenerationParams:
    """The API's stored parameters -> model.params.GenerationParams (primer checked first)."""
    fields = {k: v for k, v in params.items() if k != "model"}
    primer = fields.get("primer")
    if isinstance(primer, str):
        data = base64.b64decode(primer)
        check_midi(data, "primer", max_bytes=MAX_PRIMER_BYTES)
        fields["primer"] = data
    elif primer is not None:
        fields["primer"] = [list(note) for note in primer]
    return GenerationParams(**fields)         # Generator.generate validates against the model


def run_generation_job(runtime, job_id: str, max_attempts: int = 3) -> str:
    """Run one melody job to its end state, under a lease renewed while it runs (worker/leases.py);
    returns that state (or 'skipped')."""
    record = claim(runtime, job_id, max_attempts)
    if record is None:
        return "skipped"
    with LeaseKeeper(runtime.jobs, job_id, runtime.lease_s) as lease:
        return _run(runtime, job_id, record, lease.owner)


def _run(runtime, job_id: str, record: dict, owner: str) -> str:
    store = runtime.jobs
    try:
        # every attempt of a job draws the same melodies: without a seed, the job id gives one
        params = {**record["params"]}
        if params.get("seed") is None:
            params["seed"] = int(job_id[:8], 16)
        path = runtime.models.path(params["model"])
        if path is None:
            raise UploadInvalid(f"model {params['model']!r} is no longer registered")
        generation_request = generation_params(params)
        store.update(job_id, progress=0.1)
        generation = generate(path, generation_request)
        if store.is_cancelled(job_id):
            return "cancelled"
        result = write_melodies(runtime.home, job_id, generation, params["model"])
    except ValueError as exc:        # bad parameters or primer (UploadInvalid): the user's to fix
        fail(runtime, job_id, str(exc), owner)
        return "failed"
    except Exception as exc:                          # anything else: report it, keep the worker alive
        log.exception("melody job %s failed", job_id)
        fail(runtime, job_id, f"{type(exc).__name__}: {exc}", owner)
        return "failed"
    if store.transition(job_id, ("running",), "succeeded", owner=owner, progress=1.0, result=result,
                        finished_at=now_iso()):
        store.count(job_id, "completions")
        return "succeeded"
    if store.is_cancelled(job_id):
        shutil.rmtree(job_dir(runtime.home, job_id), ignore_errors=True)   # cancelled while we worked
        return "cancelled"
    return "skipped"     # requeued or taken over meanwhile: the other attempt writes the same files


def write_melodies(home, job_id: str, generation, model_name: str) -> dict:
    """Write every melody in every format, and a zip of them all; return the result links."""
    folder = job_dir(home, job_id)
    base = f"/api/v1/melodies/{job_id}"
    archive = io.BytesIO()
    melodies = []
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for index, melody in enumerate(generation.melodies):
            data = {"mid": melody.midi_bytes(), "musicxml": melody.musicxml_bytes(),
                    "json": json.dumps(melody.to_json()).encode()}
            for ext in FORMATS:
                atomic_write(folder / artifact_name(index, ext), data[ext])
                zf.writestr(f"tunesmith-{job_id[:8]}-{index}.{ext}", data[ext])
            melodies.append({"index": index, "midi": f"{base}/{index}.mid", "musicxml": f"{base}/{index}.musicxml",
                             "json": f"{base}/{index}.json", "wav": f"{base}/{index}.wav",
                             "notes": len(melody.notes)})
    atomic_write(folder / "melodies.zip", archive.getvalue())
    return {"seed": generation.seed, "model": model_name, "melodies": melodies, "zip": f"{base}.zip"}

