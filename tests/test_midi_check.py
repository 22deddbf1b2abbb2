"""The one MIDI checker (model/representation/midi_check.py): every kind of broken file gets a message a user can act
on, and the API (at submit), the worker and `tunesmith generate --primer` accept and reject the same
files with the same words; a file it accepts, the model reads."""
import base64
import io
import struct

import mido
import pytest

from model.representation.midi_check import MidiInvalid, check_midi
from model.generation.params import MAX_PRIMER_BYTES
from model.representation.parsing import encode_midi
from worker.uploads import UploadInvalid, check_midi as worker_check


def midi_file(*tracks, kind=1, ticks_per_beat=480) -> bytes:
    """A MIDI file of mido messages, one list per track."""
    midi = mido.MidiFile(type=kind, ticks_per_beat=ticks_per_beat)
    for messages in tracks:
        midi.tracks.append(mido.MidiTrack(messages))
    out = io.BytesIO()
    midi.save(file=out)
    return out.getvalue()


def notes(count=4, channel=0, length=240, pitch=60):
    out = []
    for i in range(count):
        out += [mido.Message("note_on", note=pitch + i, velocity=80, channel=channel, time=0),
                mido.Message("note_off", note=pitch + i, velocity=0, channel=channel, time=length)]
    return out


GOOD = midi_file([mido.MetaMessage("time_signature", numerator=3, denominator=4), *notes()])


def with_header(data: bytes, kind=None, tracks=None, division=None) -> bytes:
    size, k, n, d = struct.unpack(">LHHH", data[4:14])
    return data[:4] + struct.pack(">LHHH", size, k if kind is None else kind, n if tracks is None else tracks,
                                  d if division is None else division) + data[14:]


def raw_track(body: bytes) -> bytes:
    return b"MThd" + struct.pack(">LHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">L", len(body)) + body


# (what is wrong, the file, words the message must hold)
BROKEN = [
    ("empty", b"", "not a MIDI file"),
    ("text", b"hello, I am not music", "not a MIDI file"),
    ("header cut", GOOD[:10], "truncated"),
    ("track cut", GOOD[:40], "truncated"),
    ("fewer tracks than the header says", with_header(GOOD, tracks=3), "header counts 3 tracks but it holds 1"),
    ("no tracks", with_header(GOOD[:14], tracks=0), "no tracks"),
    ("SMPTE timing", with_header(GOOD, division=0xE728), "SMPTE"),
    ("zero ticks per beat", with_header(GOOD, division=0), "0 ticks per beat"),
    ("type 2", with_header(GOOD, kind=2), "type 2"),
    ("unknown format", with_header(GOOD, kind=7), "format 7"),
    ("a chunk that is not a track", GOOD[:14] + b"XXXX" + GOOD[18:], "'XXXX' chunk"),
    ("event cut inside its track", raw_track(b"\x00\x90\x3c"), "truncated"),
    ("data byte over 127", raw_track(b"\x00\x90\x3c\xff\x00\xff\x2f\x00"), "corrupt event"),
    ("undefined status byte", raw_track(b"\x00\xf4\x00\xff\x2f\x00"), "corrupt event"),
    ("bad key signature", raw_track(b"\x00\xff\x59\x02\x0c\x00\x00\xff\x2f\x00"), "key signature"),
    ("no notes", midi_file([mido.MetaMessage("track_name", name="silence")]), "no notes"),
    ("notes never released", midi_file([mido.Message("note_on", note=60, velocity=80, time=i * 10) for i in range(3)]),
     "never released"),
    ("notes of zero length", midi_file(notes(3, length=0)), "zero length"),
    ("only drums", midi_file(notes(5, channel=9)), "only drum notes"),
    ("a tempo of zero", midi_file([mido.MetaMessage("set_tempo", tempo=0), *notes()]), "tempo of 0"),
    ("a bar of no beats", midi_file([mido.MetaMessage("time_signature", numerator=0, denominator=4), *notes()]),
     "0/4"),
    ("too long", midi_file([*notes(1, length=10_000_001)]), "too long"),
    ("too large", GOOD + b"\x00" * MAX_PRIMER_BYTES, "at most"),
]


@pytest.mark.parametrize("what,data,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_every_kind_of_broken_midi_gets_a_message_to_act_on(what, data, words):
    with pytest.raises(MidiInvalid) as err:
        check_midi(data, "primer", max_bytes=MAX_PRIMER_BYTES)
    message = str(err.value)
    assert words in message, message
    assert message.startswith("primer ") and not message.rstrip().endswith(":")
    assert "Error" not in message and "()" not in message          # never a bare exception name
    with pytest.raises(UploadInvalid) as again:                       # the worker's check: the same words
        worker_check(data, "primer", max_bytes=MAX_PRIMER_BYTES)
    assert str(again.value) == message


def test_a_good_file_passes_with_its_notes_and_meters_and_the_model_reads_it():
    from model.representation.tokens import MelodyTokenizer
    summary = check_midi(GOOD)
    assert summary.notes == 4 and summary.meters == ["3/4"] and summary.ticks_per_beat == 480
    mixed = midi_file(notes(3) + notes(2, channel=9) + [mido.Message("note_on", note=70, velocity=9)])
    assert check_midi(mixed).notes == 3                # usable notes count; drums and a stuck note do not
    for data in (GOOD, mixed):
        assert encode_midi(MelodyTokenizer(), data)


@pytest.fixture
def client(service_env, monkeypatch):
    from service import create_app
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    return create_app().test_client()


@pytest.mark.parametrize("what,data,words", [b for b in BROKEN if b[1]], ids=[b[0] for b in BROKEN if b[1]])
def test_the_api_refuses_the_same_files_at_submit_with_the_same_words(client, what, data, words):
    response = client.post("/api/v1/melodies", json={"primer": base64.b64encode(data).decode()})
    assert response.status_code == 400, response.get_json()
    (problem,) = response.get_json()["fields"]
    assert problem["field"] == "primer"
    if len(data) <= MAX_PRIMER_BYTES:                  # (a larger one is refused by its base64 length)
        with pytest.raises(MidiInvalid) as err:
            check_midi(data, "primer", max_bytes=MAX_PRIMER_BYTES)
        assert problem["message"] == str(err.value)


def test_the_api_checks_what_only_the_model_knows(client):
    accepted = client.post("/api/v1/melodies", json={"primer": base64.b64encode(GOOD).decode(), "meter": "6/8",
                                                      "min_pitch": 48, "max_pitch": 84})
    assert accepted.status_code == 202, accepted.get_json()
    for body, field, words in [({"meter": "99/99"}, "meter", "not one model 'default' knows"),
                               ({"meter": "7/3"}, "meter", "not one"), ({"meter": "4/0"}, "meter", "not one"),
                               ({"min_pitch": 0}, "min_pitch", "range"), ({"max_pitch": 127}, "max_pitch", "range"),
                               ({"min_pitch": 61, "max_pitch": 61, "key": "C"}, "max_pitch", "no C major pitch"),
                               ({"primer": base64.b64encode(midi_file(
                                   [mido.MetaMessage("time_signature", numerator=13, denominator=16), *notes()])
                               ).decode()}, "primer", "13/16")]:
        response = client.post("/api/v1/melodies", json=body)
        assert response.status_code == 400, (body, response.get_json())
        problems = {p["field"]: p for p in response.get_json()["fields"]}
        assert words in problems[field]["message"] and problems[field]["allowed"], problems


@pytest.mark.parametrize("what,data,words", [b for b in BROKEN if b[0] in (
    "type 2", "SMPTE timing", "notes never released", "only drums", "track cut", "a tempo of zero")],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_the_cli_refuses_the_same_files_with_the_same_words(capsys, tmp_path, tiny_checkpoint, what, data, words):
    from service.cli import main
    path = tmp_path / "primer.mid"
    path.write_bytes(data)
    code = main(["generate", "--model", str(tiny_checkpoint), "--primer", str(path), "--out",
                 str(tmp_path / "out.mid")])
    assert code == 2
    with pytest.raises(MidiInvalid) as err:
        check_midi(data, "primer", max_bytes=MAX_PRIMER_BYTES)
    assert str(err.value) in capsys.readouterr().err
