"""Bounded checks of uploaded MIDI files and zips (worker/uploads.py)."""
import io
import zipfile

import mido
import pretty_midi
import pytest

from worker import uploads
from worker.uploads import UploadInvalid, check_midi, extract_midi_zip


def midi_bytes(notes=8, step=0.25) -> bytes:
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes = [pretty_midi.Note(90, 60 + i % 12, i * step, (i + 1) * step) for i in range(notes)]
    midi.instruments.append(piano)
    out = io.BytesIO()
    midi.write(out)
    return out.getvalue()


def test_a_good_file_passes_with_its_note_count():
    assert check_midi(midi_bytes(8)) == 8


@pytest.mark.parametrize("data,message", [
    (b"", "not a MIDI file"), (b"hello world", "not a MIDI file"),
    (b"MThd\x00\x00\x00\x06\x00\x01", "not a readable MIDI file"),
])
def test_garbage_is_refused_with_a_reason(data, message):
    with pytest.raises(UploadInvalid, match=message):
        check_midi(data)


def test_a_truncated_file_is_refused():
    with pytest.raises(UploadInvalid, match="readable"):
        check_midi(midi_bytes(50)[:60])


def test_a_file_without_notes_is_refused():
    out = io.BytesIO()
    mido.MidiFile(tracks=[mido.MidiTrack([mido.MetaMessage("end_of_track")])]).save(file=out)
    with pytest.raises(UploadInvalid, match="no notes"):
        check_midi(out.getvalue())


def test_limits_on_size_notes_and_length(monkeypatch):
    data = midi_bytes(40)
    monkeypatch.setattr(uploads, "MAX_NOTES", 10)
    with pytest.raises(UploadInvalid, match="at most 10 notes, got 40"):
        check_midi(data)
    monkeypatch.setattr(uploads, "MAX_NOTES", 1000)
    monkeypatch.setattr(uploads, "MAX_SECONDS", 5)
    with pytest.raises(UploadInvalid, match="at most 5 s long"):
        check_midi(data)                           # 40 notes of 0.25 s = 10 s
    monkeypatch.setattr(uploads, "MAX_MIDI_BYTES", 20)
    with pytest.raises(UploadInvalid, match="at most 20 bytes"):
        check_midi(data)


def test_a_huge_tick_count_is_refused_before_anything_allocates_by_length():
    track = mido.MidiTrack([mido.Message("note_on", note=60, velocity=90, time=0),
                            mido.Message("note_off", note=60, velocity=0, time=uploads.MAX_TICKS + 1)])
    out = io.BytesIO()
    mido.MidiFile(tracks=[track]).save(file=out)
    with pytest.raises(UploadInvalid, match="too long"):
        check_midi(out.getvalue())


def make_zip(path, members: dict):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_keeps_valid_midi_flattened_and_reports_the_rest(tmp_path):
    archive = make_zip(tmp_path / "in.zip", {
        "tunes/a.mid": midi_bytes(), "../../escape.mid": midi_bytes(), "B.MIDI": midi_bytes(),
        "notes.txt": "text", "bad.mid": b"MThd broken", "__MACOSX/._a.mid": b"junk"})
    kept, skipped = extract_midi_zip(archive, tmp_path / "out")
    assert len(kept) == 3
    assert all(p.parent == tmp_path / "out" for p in kept)          # nothing outside dest
    assert not (tmp_path / "escape.mid").exists()
    assert {n for n, _ in skipped} == {"notes.txt", "bad.mid", "__MACOSX/._a.mid"}
    assert all(check_midi(p.read_bytes()) > 0 for p in kept)


def test_zip_without_midi_or_not_a_zip_is_refused(tmp_path):
    with pytest.raises(UploadInvalid, match="no usable MIDI file.*readme.txt"):
        extract_midi_zip(make_zip(tmp_path / "a.zip", {"readme.txt": "x"}), tmp_path / "out")
    (tmp_path / "b.zip").write_bytes(b"PK\x03\x04 but not really")
    with pytest.raises(UploadInvalid, match="not a readable zip"):
        extract_midi_zip(tmp_path / "b.zip", tmp_path / "out")


def test_zip_member_larger_than_the_limit_is_skipped_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_MIDI_BYTES", 100)
    archive = make_zip(tmp_path / "in.zip", {"big.mid": b"MThd" + b"\x00" * 5000, "ok.mid": midi_bytes(2)})
    monkeypatch.setattr(uploads, "MAX_MIDI_BYTES", 2000)
    kept, skipped = extract_midi_zip(archive, tmp_path / "out")
    assert [p.name for p in kept] == ["00001-ok.mid"] and skipped[0][0] == "big.mid"


def test_unpacking_stops_between_files_when_asked(tmp_path):
    archive = make_zip(tmp_path / "in.zip", {f"{i}.mid": midi_bytes(2) for i in range(5)})
    asked = []
    with pytest.raises(uploads.Stopped):
        extract_midi_zip(archive, tmp_path / "out", should_stop=lambda: asked.append(1) or len(asked) > 2)
    assert len(asked) == 3 and len(list((tmp_path / "out").iterdir())) == 2
