"""worker/formats.py behind service/downloads.py, on the real Redis: MusicXML, WAV and the zip of a
job that stored only MIDI and JSON are rendered on their first download, cached, and every download
gives the same bytes; two processes rendering at once keep one file."""
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path


from model.generation.params import GenerationParams
from model.generation.sampling import Generator
from worker.formats import cached
from worker.generation import melody_files, scored, write_files


def finished_job(app, checkpoint, **params) -> str:
    """A melody job as a worker leaves it: its files written, its record succeeded."""
    runtime = app.extensions["tunesmith"]
    job_id = runtime.jobs.create("melody", {**params, "model": "default"})["id"]
    generation = Generator(checkpoint).generate(GenerationParams(**params))
    result, files = melody_files(job_id, scored(generation), generation.seed, "default")
    write_files(runtime.home, job_id, files)
    runtime.jobs.transition(job_id, ("queued",), "succeeded", result=result, progress=1.0)
    return job_id


def test_rendered_formats_give_the_same_bytes_before_and_after_they_are_cached(app, tiny_checkpoint):
    job_id = finished_job(app, tiny_checkpoint, bars=4, count=2, seed=3, meter="3/4")
    folder = Path(app.extensions["tunesmith"].home) / "jobs" / job_id
    assert sorted(p.name for p in folder.iterdir()) == ["melody-0.json", "melody-0.mid", "melody-1.json", "melody-1.mid"]
    client = app.test_client()
    for path, ext in ((f"/api/v1/melodies/{job_id}/1.musicxml", "musicxml"), (f"/api/v1/melodies/{job_id}/1.wav", "wav"),
                      (f"/api/v1/melodies/{job_id}.zip", "zip")):
        first = client.get(path)
        assert first.status_code == 200, path
        cached_name = "melodies.zip" if ext == "zip" else f"melody-1.{ext}"
        assert (folder / cached_name).read_bytes() == first.data          # the first download was cached
        assert client.get(path).data == first.data                         # and is what later ones get
    assert client.get(f"/api/v1/melodies/{job_id}/1.musicxml").data.lstrip().startswith(b"<?xml")
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/melodies/{job_id}.zip").data))
    assert len(archive.namelist()) == 6
    assert archive.read(f"tunesmith-{job_id[:8]}-1.musicxml") == (folder / "melody-1.musicxml").read_bytes()
    assert archive.read(f"tunesmith-{job_id[:8]}-0.mid") == client.get(f"/api/v1/melodies/{job_id}.mid").data
    assert json.loads(archive.read(f"tunesmith-{job_id[:8]}-0.json"))["notes"] == \
        client.get(f"/api/v1/melodies/{job_id}/0.json").get_json()["notes"]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]   # no temporary files left
    assert client.get(f"/api/v1/melodies/{job_id}/2.musicxml").status_code == 404


def test_the_first_render_to_finish_is_the_one_kept(tmp_path):
    path = tmp_path / "melody-0.musicxml"

    def late_render():                       # another process caches its render while this one renders
        cached(path, lambda: b"theirs")
        return b"mine"
    assert cached(path, late_render).read_bytes() == b"theirs"
    assert cached(path, lambda: b"again").read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["melody-0.musicxml"]


def test_rendering_on_download_loads_no_torch_in_the_api_process(app, tiny_checkpoint, service_env):
    job_id = finished_job(app, tiny_checkpoint, bars=2, seed=1)
    code = ("import json, sys\n"
            "from service import create_app\n"
            "client = create_app().test_client()\n"
            f"codes = [client.get('/api/v1/melodies/{job_id}/0.' + ext).status_code for ext in ('musicxml', 'wav')]\n"
            f"codes.append(client.get('/api/v1/melodies/{job_id}.zip').status_code)\n"
            "print(json.dumps({'codes': codes, 'torch': 'torch' in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **service_env},
                         capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"codes": [200, 200, 200], "torch": False}
