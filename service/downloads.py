"""Downloads of a finished melody job, at stable URLs:

    /api/v1/melodies/<id>.mid            the first melody (also .musicxml, .json, .wav)
    /api/v1/melodies/<id>/<n>.mid        melody n (0-based), same formats
    /api/v1/melodies/<id>.zip            every melody in every format

The worker wrote each melody's MIDI and JSON under its TUNESMITH_HOME/jobs/<id>/ (melody-<n>.<ext>)
and into Redis, from where a process on another machine fetches them into its own folder;
MusicXML and the zip (worker/formats.py) and the WAV (service/audio.py) are rendered here on their
first download and cached beside them, so later downloads give the same bytes.
"""
import threading
import time

from flask import Blueprint, abort, current_app, jsonify, send_file

from worker import artifact_name, cached_file, job_zip, maybe_sweep, melody_file

SWEEP_CHECK_S = 60  # how often a process looks at the shared sweep lock

bp = Blueprint("downloads", __name__, url_prefix="/api/v1/melodies")

MEDIA_TYPES = {"mid": "audio/midi", "musicxml": "application/vnd.recordare.musicxml+xml",
               "json": "application/json", "wav": "audio/wav", "zip": "application/zip"}


@bp.get("/<job_id>.<ext>")
def first_melody(job_id, ext):
    if ext == "zip":
        folder, record = _finished_job(job_id)
        path = job_zip(folder, job_id, len(record["result"]["melodies"]), _fetch(job_id))
        return _send(path, f"tunesmith-{job_id[:8]}.zip", "zip")
    return one_melody(job_id, 0, ext)


@bp.get("/<job_id>/<int:index>.<ext>")
def one_melody(job_id, index, ext):
    if ext not in MEDIA_TYPES or ext == "zip":
        abort(404, f"no format {ext!r}; formats: mid, musicxml, json, wav, zip")
    folder, _ = _finished_job(job_id)
    if ext == "wav":
        midi = melody_file(folder, index, "mid", _fetch(job_id))
        from service.audio import render_wav
        path = midi and cached_file(folder / artifact_name(index, "wav"), lambda: render_wav(midi.read_bytes()))
    else:
        path = melody_file(folder, index, ext, _fetch(job_id))
    if path is None:
        abort(404, f"job {job_id} has no melody {index}")
    return _send(path, f"tunesmith-{job_id[:8]}-{index}.{ext}", ext)


_last_sweep = [0.0]  # this process's last look at the sweep lock (time.monotonic)


@bp.before_request
def _sweep_now_and_then():
    """The API keeps the files it fetched from Redis in its own TUNESMITH_HOME: sweep the expired
    ones as the workers do (worker/jobs.py: at most once an hour per folder), off the request's path."""
    now = time.monotonic()
    if now - _last_sweep[0] < SWEEP_CHECK_S:
        return
    _last_sweep[0] = now
    runtime = current_app.extensions["tunesmith"]
    threading.Thread(target=maybe_sweep, args=(runtime, runtime.job_ttl), name="sweep", daemon=True).start()


def _fetch(job_id):
    """The job's stored files in Redis, for an API process that does not share the worker's disk."""
    return current_app.extensions["tunesmith"].files.fetcher(job_id)


def _finished_job(job_id):
    """(the job's folder, its record) of a succeeded melody job; 404 or 409 otherwise."""
    record = current_app.extensions["tunesmith"].jobs.get(job_id)
    if record is None or record["kind"] != "melody":
        abort(404, f"no melody job {job_id!r} (unknown or expired)")
    if record["state"] != "succeeded":
        response = jsonify(error=f"job is {record['state']}; files exist once it has succeeded",
                           state=record["state"])
        response.status_code = 409
        abort(response)
    return current_app.extensions["tunesmith"].job_dir(job_id), record


def _send(path, download_name, ext):
    if not path.exists():
        abort(404, f"no file {download_name}")
    return send_file(path, mimetype=MEDIA_TYPES[ext], as_attachment=True, download_name=download_name)
