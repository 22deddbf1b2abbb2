"""Chords through the service: `chords`, `chord_tones` and `harmonize` on POST /api/v1/melodies checked
at the edge (400s naming the field), and the files of a harmonized job (worker/generation.py's
melody_files, worker/formats.py's renders) read back with mido and music21."""
import io
import json

import mido
import pytest
from music21 import converter, harmony

from model.generation.params import GenerationParams
from model.generation.sampling import Generator
from model.representation.chords import parse_chord
from model.representation.notation import Score, midi_bytes
from worker.generation import generation_params, melody_files, scored, write_files


@pytest.fixture
def client(app):
    return app.test_client()


def problems(response) -> dict:
    assert response.status_code == 400, response.get_json()
    return {f["field"]: f for f in response.get_json()["fields"]}


def test_an_unknown_chord_is_a_400_naming_it_and_the_vocabulary(client):
    bad = problems(client.post("/api/v1/melodies", json={"chords": "G C | H7 G"}))["chords"]
    assert "'H7'" in bad["message"] and "dim" in bad["allowed"]
    assert "chords" in problems(client.post("/api/v1/melodies", json={"chords": ["G", "Cmaj9"]}))
    assert "chords" in problems(client.post("/api/v1/melodies", json={"chords": "G || C"}))
    assert "chords" in problems(client.post("/api/v1/melodies", json={"chords": 7}))
    assert "chord_tones" in problems(client.post("/api/v1/melodies", json={"chords": "G", "chord_tones": "always"}))
    assert "harmonize" in problems(client.post("/api/v1/melodies", json={"harmonize": "yes"}))


def test_chords_and_harmonize_are_queued_with_the_request(client):
    ok = client.post("/api/v1/melodies", json={"chords": ["G C", "D7 G"], "chord_tones": "strict", "harmonize": True})
    assert ok.status_code == 202, ok.get_json()
    params = client.get(ok.get_json()["status_url"]).get_json()["params"]
    assert (params["chords"], params["chord_tones"], params["harmonize"]) == (["G C", "D7 G"], "strict", True)
    request = generation_params({**params, "seed": 1})            # what the worker makes of it
    assert request.progression()[1] == [parse_chord("D7"), parse_chord("G")]


def harmonized_job(app, checkpoint, harmonize_params) -> tuple[str, dict]:
    runtime = app.extensions["tunesmith"]
    request = GenerationParams(**harmonize_params)
    job_id = runtime.jobs.create("melody", {**harmonize_params, "harmonize": True, "model": "default"})["id"]
    generation = Generator(checkpoint).generate(request)
    result, files = melody_files(job_id, scored(generation), generation.seed, "default", harmonized=request)
    write_files(runtime.home, job_id, files)
    runtime.jobs.transition(job_id, ("queued",), "succeeded", result=result, progress=1.0)
    return job_id, result


def test_a_job_over_given_chords_carries_them_into_every_file(app, tiny_checkpoint):
    job_id, result = harmonized_job(app, tiny_checkpoint, {"bars": 4, "seed": 5, "chords": "G C | D7 G",
                                                           "chord_tones": "strict"})
    assert result["melodies"][0]["chords"] == ["G", "C", "D7", "G", "C", "D7", "G"]   # repeated, merged at bar 2
    client = app.test_client()
    melody = client.get(f"/api/v1/melodies/{job_id}/0.json").get_json()
    assert [c["chord"] for c in melody["chords"]] == result["melodies"][0]["chords"]
    assert [c["start_beats"] for c in melody["chords"]][:3] == [0.0, 2.0, 4.0]
    midi = client.get(f"/api/v1/melodies/{job_id}/0.mid").data
    file = mido.MidiFile(file=io.BytesIO(midi))
    assert [t.name for t in file.tracks[1:]] == ["melody", "accompaniment"]
    plain = mido.MidiFile(file=io.BytesIO(midi_bytes(Score.from_melody_json(melody))))
    assert file.tracks[1] == plain.tracks[1]                         # the melody's events unchanged
    xml = client.get(f"/api/v1/melodies/{job_id}/0.musicxml").data
    parsed = converter.parseData(xml, format="musicxml")
    assert [c.figure for c in parsed.recurse().getElementsByClass(harmony.ChordSymbol)] == \
        ["G", "C", "D7", "G", "C", "D7", "G"]
    wav = client.get(f"/api/v1/melodies/{job_id}/0.wav")
    assert wav.status_code == 200 and wav.data[:4] == b"RIFF"


def test_harmonize_without_chords_estimates_them(app, tiny_checkpoint):
    job_id, result = harmonized_job(app, tiny_checkpoint, {"bars": 3, "seed": 2, "meter": "3/4"})
    chords = result["melodies"][0]["chords"]
    assert 1 <= len(chords) <= 3 and all(parse_chord(c) for c in chords)   # one a bar at most, in the vocabulary
    melody = json.loads(app.test_client().get(f"/api/v1/melodies/{job_id}/0.json").data)
    assert [c["chord"] for c in melody["chords"]] == chords


def test_a_harmonization_request_checks_its_midi_at_the_edge(client):
    import base64
    assert "melody" in problems(client.post("/api/v1/harmonizations", json={}))
    assert "melody" in problems(client.post("/api/v1/harmonizations", json={"melody": "not base64!"}))
    bad = problems(client.post("/api/v1/harmonizations", json={"melody": base64.b64encode(b"MThd nonsense").decode()}))
    assert "MIDI" in bad["melody"]["message"] or "midi" in bad["melody"]["message"]
    assert "bars" in problems(client.post("/api/v1/harmonizations", json={"melody": "AAAA", "bars": 4}))  # unknown
