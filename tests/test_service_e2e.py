"""End to end over real HTTP: `tunesmith serve` (gunicorn + a generate worker + a train worker,
as child processes) against the real Redis; jobs go POST -> poll -> download -> parse."""
import base64
import io
import json
import os
import zipfile

import mido
import pretty_midi
import pytest
import requests

from conftest import forget_keys, service_environment
from model.representation.notation import Score, midi_bytes
from support import serving, wait_until

pytestmark = pytest.mark.slow
TOKEN = {"Authorization": "Bearer test-token"}
D_MAJOR = {2, 4, 6, 7, 9, 11, 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint, redis_base_url):
    """`python -m service.cli serve` on a free port; yields its base URL."""
    home = tmp_path_factory.mktemp("serve-home")
    env = {**os.environ, **service_environment(home, tiny_checkpoint, redis_base_url)}
    try:
        with serving(home, env) as base:
            yield base
    finally:
        forget_keys(env)


def run_job(base, path, body, timeout=90, **kwargs):
    response = requests.post(f"{base}{path}", json=body, timeout=10, **kwargs)
    assert response.status_code == 202, response.text
    return wait_for_job(base + response.headers["Location"], timeout)


def wait_for_job(url, timeout):
    """Poll a job until it has finished: (its last record, every record seen)."""
    seen = []

    def finished():
        record = requests.get(url, timeout=10).json()
        seen.append(record)
        return record if record["state"] in ("succeeded", "failed", "cancelled") else None
    return wait_until(finished, timeout, f"job {url}"), seen


def download(base, path) -> requests.Response:
    response = requests.get(base + path, timeout=20)
    assert response.status_code == 200, (path, response.text[:300])
    return response


def midi_pitches(data: bytes) -> list[int]:
    midi = mido.MidiFile(file=io.BytesIO(data))
    return [m.note for track in midi.tracks for m in track if m.type == "note_on" and m.velocity > 0]


def test_melodies_in_key_and_range_count_honoured_all_formats(server):
    job, seen = run_job(server, "/api/v1/melodies", {"bars": 4, "count": 3, "key": "D", "scale": "major",
                                                     "min_pitch": 60, "max_pitch": 79, "seed": 11, "tempo": 100})
    assert job["state"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["started_at"] and job["finished_at"] and job["attempts"] == 1
    progress = [r["progress"] for r in seen]
    assert progress == sorted(progress)
    result = job["result"]
    assert result["seed"] == 11 and result["model"] == "default" and len(result["melodies"]) == 3
    for melody in result["melodies"]:
        response = download(server, melody["midi"])
        assert response.headers["Content-Type"] == "audio/midi"
        assert f"tunesmith-{job['id'][:8]}-{melody['index']}.mid" in response.headers["Content-Disposition"]
        pitches = midi_pitches(response.content)
        assert len(pitches) == melody["notes"] > 0
        assert all(60 <= p <= 79 and p % 12 in D_MAJOR for p in pitches), pitches
        assert download(server, melody["musicxml"]).content.lstrip().startswith(b"<?xml")
        notes = download(server, melody["json"]).json()["notes"]
        assert [n["pitch"] for n in notes] == pitches
        wav = download(server, melody["wav"])
        assert wav.headers["Content-Type"] == "audio/wav" and wav.content[:4] == b"RIFF"
    first = download(server, f"/api/v1/melodies/{job['id']}.mid").content
    assert first == download(server, result["melodies"][0]["midi"]).content
    archive = zipfile.ZipFile(io.BytesIO(download(server, result["zip"]).content))
    assert len([n for n in archive.namelist() if n.endswith(".mid")]) == 3
    assert len(archive.namelist()) == 9
    assert requests.get(f"{server}/api/v1/melodies/{job['id']}/3.mid", timeout=10).status_code == 404


def test_same_seed_twice_gives_identical_bytes(server):
    body = {"bars": 4, "seed": 1234, "temperature": 1.2}
    first, _ = run_job(server, "/api/v1/melodies", body)
    second, _ = run_job(server, "/api/v1/melodies", body)
    other, _ = run_job(server, "/api/v1/melodies", {**body, "seed": 4321})
    a, b, c = (download(server, job["result"]["melodies"][0]["midi"]).content for job in (first, second, other))
    assert a == b
    assert a != c


def test_a_bad_primer_is_refused_at_submit_with_a_message_and_a_good_one_runs(server):
    """Checked in the API now (model/representation/midi_check.py, the worker's own check): a bad primer never
    becomes a job. tests/test_worker.py shows the worker failing such a job that got past the API."""
    garbage = base64.b64encode(b"MThd\x00\x00\x00\x06garbage").decode()
    response = requests.post(f"{server}/api/v1/melodies", json={"primer": garbage}, timeout=10)
    assert response.status_code == 400 and "primer" in response.json()["fields"][0]["message"]
    truncated = base64.b64encode(tiny_midi()[:30]).decode()
    response = requests.post(f"{server}/api/v1/melodies", json={"primer": truncated}, timeout=10)
    assert response.status_code == 400
    assert "primer is not a readable MIDI file" in response.json()["fields"][0]["message"]
    job, _ = run_job(server, "/api/v1/melodies", {"primer": [[67, 0, 1], [69, 1, 1]], "bars": 2, "seed": 2})
    assert job["state"] == "succeeded", job["error"]
    assert midi_pitches(download(server, job["result"]["melodies"][0]["midi"]).content)[:2] == [67, 69]


def tiny_midi(t: int = 0) -> bytes:
    """A small MIDI melody made with pretty_midi (a scale or an arpeggio, 8 bars)."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0)
    pattern = [0, 2, 4, 5, 7, 5, 4, 2] if t % 2 else [0, 4, 7, 12, 7, 4, 0, 7]
    for i in range(32):
        pitch = 60 + (t % 5) + pattern[i % 8]
        piano.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=i * 0.25, end=i * 0.25 + 0.25))
    midi.instruments.append(piano)
    data = io.BytesIO()
    midi.write(data)
    return data.getvalue()


def tiny_corpus_zip(tunes=24) -> bytes:
    """A zip of small MIDI melodies, and one file that is not MIDI. With these names and
    valid=0.3 the split by hash puts 4 tunes in the validation set."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for t in range(tunes):
            zf.writestr(f"tune-{t:02d}.mid", tiny_midi(t))
        zf.writestr("readme.txt", "not a tune")
    return out.getvalue()


def test_training_job_registers_a_model_that_becomes_default_and_generates(server):
    settings = {"epochs": 2, "hidden_size": 16, "embedding_dim": 8, "layers": 1, "batch_size": 4, "bptt": 16,
                "dropout": 0.0, "valid": 0.3, "name": "tiny-e2e", "max_minutes": 5}
    response = requests.post(f"{server}/api/v1/training-jobs", headers=TOKEN, timeout=20,
                             files={"file": ("tunes.zip", tiny_corpus_zip())},
                             data={k: json.dumps(v) if not isinstance(v, str) else v for k, v in settings.items()})
    assert response.status_code == 202, response.text
    job, seen = wait_for_job(server + response.headers["Location"], 240)
    assert job["state"] == "succeeded", job["error"]
    progress = [r["progress"] for r in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    training = job["training"]
    assert training["epoch"] == 2 and training["epochs"] == 2 and training["model"] == "tiny-e2e"
    assert [h["epoch"] for h in training["history"]] == [1, 2]
    assert all(h["train_loss"] > 0 and h["valid_loss"] > 0 for h in training["history"])
    assert training["tokens_per_s"] > 0

    models = {m["name"]: m for m in requests.get(f"{server}/api/v1/models", timeout=10).json()["models"]}
    assert models["tiny-e2e"]["metrics"]["valid_loss"] > 0 and not models["tiny-e2e"]["default"]
    assert models["tiny-e2e"]["data"].startswith("upload.zip")
    made = requests.post(f"{server}/api/v1/models/tiny-e2e/default", headers=TOKEN, timeout=10)
    assert made.status_code == 200 and made.json()["default"] == "tiny-e2e"
    try:
        melody, _ = run_job(server, "/api/v1/melodies", {"bars": 2, "seed": 3})
        assert melody["state"] == "succeeded", melody["error"]
        assert melody["params"]["model"] == "tiny-e2e" and melody["result"]["model"] == "tiny-e2e"
        assert midi_pitches(download(server, melody["result"]["melodies"][0]["midi"]).content)
    finally:
        requests.post(f"{server}/api/v1/models/default/default", headers=TOKEN, timeout=10)


def test_training_on_a_zip_without_midi_fails_with_a_message(server):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes.txt", "no tunes here")
        zf.writestr("broken.mid", b"MThd garbage")
    job, _ = run_job(server, "/api/v1/training-jobs", {"data_base64": base64.b64encode(archive.getvalue()).decode(),
                                                       "epochs": 1}, headers=TOKEN)
    assert job["state"] == "failed"
    assert "no usable MIDI file" in job["error"] and "broken.mid" in job["error"]


def test_cancel_a_running_training_job(server):
    # 500 epochs of small steps with early stopping out of reach: minutes of work, so the job is
    # still running when it is cancelled (a tiny model finished all 500 epochs within a poll)
    response = requests.post(f"{server}/api/v1/training-jobs", headers=TOKEN, timeout=20, json={
        "data_base64": base64.b64encode(tiny_corpus_zip()).decode(), "epochs": 500, "hidden_size": 256,
        "embedding_dim": 8, "layers": 2, "batch_size": 1, "bptt": 4, "valid": 0.3, "patience": 500,
        "name": "never-finished"})
    assert response.status_code == 202
    url = server + response.headers["Location"]

    def stepping():
        record = requests.get(url, timeout=10).json()
        assert record["state"] in ("queued", "running"), record
        return record["training"]["step"] > 0
    wait_until(stepping, 240, "training to start")
    cancelled = requests.delete(url, timeout=10, headers={"Authorization": f"Bearer {response.json()['cancel_token']}"})
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    # the worker stops at its next check and takes the next job
    follow, _ = run_job(server, "/api/v1/training-jobs", {"data": "nosuchcollection", "epochs": 1}, headers=TOKEN)
    assert follow["state"] == "failed" and "nosuchcollection" in follow["error"]
    assert requests.get(url, timeout=10).json()["state"] == "cancelled"
    names = [m["name"] for m in requests.get(f"{server}/api/v1/models", timeout=10).json()["models"]]
    assert "never-finished" not in names


def read_events(stream) -> list[dict]:
    """Server-sent events from a streaming response until the job's end state."""
    events, fields = [], {}
    for line in stream.iter_lines(decode_unicode=True):
        if line:
            if not line.startswith((":", "retry")):
                name, value = line.split(": ", 1)
                fields[name] = value
            continue
        if "event" in fields:
            events.append({"event": fields["event"], "data": json.loads(fields["data"])})
            if fields["event"] == "state" and events[-1]["data"]["state"] in ("succeeded", "failed", "cancelled"):
                return events
        fields = {}
    return events


def test_the_event_stream_delivers_every_bar_in_order_and_ends_with_the_result(server):
    body = {"bars": 8, "count": 2, "seed": 21, "redraw_degenerate": False}
    accepted = requests.post(f"{server}/api/v1/melodies", json=body, timeout=10)
    assert accepted.status_code == 202
    job_id = accepted.json()["id"]
    with requests.get(f"{server}/api/v1/jobs/{job_id}/events", stream=True, timeout=60) as stream:
        assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(stream)
    assert events[0]["event"] == "state" and events[-1]["data"]["state"] == "succeeded"
    job = requests.get(f"{server}/api/v1/jobs/{job_id}", timeout=10).json()
    assert events[-1]["data"]["result"] == job["result"]
    bars = [e["data"] for e in events if e["event"] == "bar"]
    for melody in job["result"]["melodies"]:
        mine = [b for b in bars if b["melody"] == melody["index"]]
        assert [b["bar"] for b in mine] == list(range(8))
        streamed = [n for b in mine for n in b["notes"]]
        notes = download(server, melody["json"]).json()["notes"]
        assert [(n["pitch"], n["start_beats"]) for n in streamed] == [(n["pitch"], n["start_beats"]) for n in notes]
        # a note still sounding at its barline is sent as far as that barline; the result has its end
        assert all(s["end_beats"] <= n["end_beats"] for s, n in zip(streamed, notes))
    progress = [b["progress"] for b in bars]
    assert progress == sorted(progress) and 0 < progress[0] < 1


def test_bars_regenerated_through_the_service_keep_the_rest_of_the_primer(server):
    """A MIDI primer (32 eighth notes: 4 bars of 4/4), bar 2
    regenerated: the notes of bars 1, 3 and 4 come back unchanged (read with mido); a span past the
    primer's end fails the job with a message naming the field."""
    primer = tiny_midi(3)
    body = {"primer": base64.b64encode(primer).decode(), "regenerate": {"from_bar": 2, "to_bar": 2}, "seed": 4,
            "count": 2}
    job, _ = run_job(server, "/api/v1/melodies", body)
    assert job["state"] == "succeeded", job["error"]

    def notes(data):
        out, now, ticks = [], 0, mido.MidiFile(file=io.BytesIO(data)).ticks_per_beat
        for msg in mido.merge_tracks(mido.MidiFile(file=io.BytesIO(data)).tracks):
            now += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                out.append((msg.note, now / ticks))
        return out
    outside = lambda data: [n for n in notes(data) if not 4 <= n[1] < 8]   # beats 4..8 are bar 2
    for melody in job["result"]["melodies"]:
        assert outside(download(server, melody["midi"]).content) == outside(primer)
    job, _ = run_job(server, "/api/v1/melodies", {**body, "regenerate": {"from_bar": 3, "to_bar": 9}})
    assert job["state"] == "failed" and "regenerate" in job["error"] and "1..4" in job["error"]


def test_a_melody_over_given_chords_comes_back_with_them_and_an_accompaniment(server):
    job, _ = run_job(server, "/api/v1/melodies", {"bars": 4, "seed": 3, "chords": "C Am | F G7",
                                                  "chord_tones": "strict", "harmonize": True})
    assert job["state"] == "succeeded", job["error"]
    melody = job["result"]["melodies"][0]
    assert melody["chords"] == ["C", "Am", "F", "G7", "C", "Am", "F", "G7"]
    midi = mido.MidiFile(file=io.BytesIO(download(server, melody["midi"]).content))
    assert [t.name for t in midi.tracks[1:]] == ["melody", "accompaniment"]
    tones = {0: {0, 4, 7}, 8: {9, 0, 4}, 16: {5, 9, 0}, 24: {7, 11, 2, 5}}       # 16th steps in the 2-bar cycle
    notes = download(server, melody["json"]).json()["notes"]
    strong = [n for n in notes if (n["start_beats"] * 4) % 8 == 0]
    assert strong and all(n["pitch"] % 12 in tones[int(n["start_beats"] * 4) % 32] for n in strong)
    assert b"<harmony" in download(server, melody["musicxml"]).content


def test_a_users_midi_melody_is_harmonized_through_the_service(server):
    """POST /harmonizations with a MIDI melody: the job's MIDI keeps the melody's notes and adds an
    accompaniment track; its JSON and MusicXML carry the estimated chords."""
    score = Score(tuple((60 + t, 4 * i, 4 * i + 4) for i, t in enumerate([0, 4, 7, 12, 5, 9, 12, 17, 7, 11, 14, 19,
                                                                          0, 4, 7, 12])),
                  ((0, "4/4"),), (0, 16, 32, 48, 64), 4, 100.0)
    melody = midi_bytes(score)
    job, _ = run_job(server, "/api/v1/harmonizations", {"melody": base64.b64encode(melody).decode()})
    assert job["state"] == "succeeded", job["error"]
    result = job["result"]["melodies"][0]
    assert result["chords"] == ["C", "F", "G", "C"]
    midi = mido.MidiFile(file=io.BytesIO(download(server, result["midi"]).content))
    assert [t.name for t in midi.tracks[1:]] == ["melody", "accompaniment"]
    assert [m.note for m in midi.tracks[1] if m.type == "note_on" and m.velocity] == [p for p, _, _ in score.notes]
    assert [c["chord"] for c in download(server, result["json"]).json()["chords"]] == ["C", "F", "G", "C"]
    assert download(server, result["musicxml"]).content.count(b"<harmony") == 4
    bad = requests.post(f"{server}/api/v1/harmonizations", json={"melody": "AAAA"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["fields"][0]["field"] == "melody"
