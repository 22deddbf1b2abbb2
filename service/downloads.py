"""Downloads of a finished melody job, at stable URLs:

    /api/v1/melodies/<id>.mid            the first melody (also .musicxml, .json, .wav)
    /api/v1/melodies/<id>/<n>.mid        melody n (0-based), same formats
    /api/v1/melodies/<id>.zip            every melody in every format

The worker wrote the files under TUNESMITH_HOME/jobs/<id>/ (melody-<n>.<ext>); a .wav is
rendered on first request (service/audio.py) and kept beside them.
"""
from flask import Blueprint, abort, current_app, jsonify, send_file

from worker import artifact_name, atomic_write

bp = Blueprint("downloads", __name__, url_prefix="/api/v1/melodies")

MEDIA_TYPES = {"mid": "audio/midi", "musicxml": "application/vnd.recordare.musicxml+xml",
               "json": "application/json", "wav": "audio/wav", "zip": "application/zip"}


@bp.get("/<job_id>.<ext>")
def first_melody(job_id, ext):
    if ext == "zip":
        folder = _finished_job_dir(job_id)
        return _send(folder / "melodies.zip", f"tunesmith-{job_id[:8]}.zip", "zip")
    return one_melody(job_id, 0, ext)


@bp.get("/<job_id>/<int:index>.<ext>")
def one_melody(job_id, index, ext):
    if ext not in MEDIA_TYPES or ext == "zip":
        abort(404, f"no format {ext!r}; formats: mid, musicxml, json, wav, zip")
    folder = _finished_job_dir(job_id)
    path = folder / artifact_name(index, ext)
    if ext == "wav" and not path.exists() and (folder / artifact_name(index, "mid")).exists():
        from service.audio import render_wav
        atomic_write(path, render_wav((folder / artifact_name(index, "mid")).read_bytes()))
    if not path.exists():
        abort(404, f"job {job_id} has no melody {index}")
    return _send(path, f"tunesmith-{job_id[:8]}-{index}.{ext}", ext)


def _finished_job_dir(job_id):
    record = current_app.extensions["tunesmith"].jobs.get(job_id)
    if record is None or record["kind"] != "melody":
        abort(404, f"no melody job {job_id!r} (unknown or expired)")
    if record["state"] != "succeeded":
        response = jsonify(error=f"job is {record['state']}; files exist once it has succeeded",
                           state=record["state"])
        response.status_code = 409
        abort(response)
    return current_app.extensions["tunesmith"].job_dir(job_id)


def _send(path, download_name, ext):
    if not path.exists():
        abort(404, f"no file {download_name}")
    return send_file(path, mimetype=MEDIA_TYPES[ext], as_attachment=True, download_name=download_name,
                     max_age=3600)
