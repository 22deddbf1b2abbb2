"""Chords written out (model/generation/accompaniment.py): MusicXML chord symbols read back with music21,
the accompaniment track read back with mido, and `tunesmith harmonize`."""
import io
import json
import struct

import mido
import pytest
from music21 import converter, harmony

from model.cli import main
from model.generation.accompaniment import (BASS_LOW, accompanied_midi, accompaniment_notes, chord_symbols,
                                            progression_chords, score_chords)
from model.representation.chords import parse_progression
from model.representation.notation import Score, midi_bytes, musicxml_bytes


def arpeggio_score(meter="4/4", tonic=0, tempo=100.0):
    """I IV V I, one chord a bar, as quarter notes (4 steps a quarter)."""
    length = {"4/4": 4, "3/4": 3}[meter]
    notes, starts = [], []
    for b, root in enumerate((0, 5, 7, 0)):
        starts.append(b * length * 4)
        for i, t in enumerate([0, 4, 7, 12][:length]):
            start = (b * length + i) * 4
            notes.append((60 + tonic + root + t, start, start + 4))
    return Score(tuple(notes), ((0, meter),), tuple(starts + [4 * length * 4]), 4, tempo)


def track_chunks(data: bytes) -> list[bytes]:
    """The raw bytes of each MTrk chunk of a MIDI file."""
    out, at = [], 14                                     # after MThd's 8 + 6 bytes
    while at < len(data):
        kind, size = data[at:at + 4], struct.unpack(">I", data[at + 4:at + 8])[0]
        assert kind == b"MTrk"
        out.append(data[at + 8:at + 8 + size])
        at += 8 + size
    return out


@pytest.mark.parametrize("meter", ["4/4", "3/4"])
def test_the_accompaniment_is_a_track_of_its_own_and_the_melody_bytes_are_unchanged(meter):
    score = arpeggio_score(meter)
    spans = progression_chords(score, parse_progression("C | F | G7 | C"))
    plain, with_chords = midi_bytes(score), accompanied_midi(score, spans)
    assert track_chunks(with_chords)[:2] == track_chunks(plain)          # timing and melody, byte for byte
    file = mido.MidiFile(file=io.BytesIO(with_chords))
    assert len(file.tracks) == 3 and file.tracks[2].name == "accompaniment"
    ons, tick = [], 0
    for msg in file.tracks[2]:
        tick += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            assert msg.channel == 1
            ons.append((tick // (file.ticks_per_beat), msg.note))
    beats = {4: [0, 1, 2, 3], 3: [0, 1, 2]}[int(meter[0])]
    for bar, (root, tones) in enumerate([(0, {0, 4, 7}), (5, {5, 9, 0}), (7, {7, 11, 2, 5}), (0, {0, 4, 7})]):
        first = bar * len(beats)
        at = {b: sorted(n for q, n in ons if q == first + b) for b in beats}
        assert at[0] == [BASS_LOW + root]                               # the bass on beat one alone
        for b in beats[1:]:                                             # the chord on the other beats
            assert {n % 12 for n in at[b]} == tones and len(at[b]) == len(tones)


def test_chord_symbols_survive_into_musicxml():
    score = arpeggio_score("4/4", tonic=5)                              # F major: F Bb C F
    spans = progression_chords(score, parse_progression("F | Bb | C7 Am | F"))
    symbols = chord_symbols(score, spans)
    assert [s for _, s in symbols] == ["F", "Bb", "C7", "Am", "F"]
    parsed = converter.parseData(musicxml_bytes(score, symbols), format="musicxml")
    read = [(float(c.getOffsetInHierarchy(parsed)), c.root().name, c.pitchClasses)
            for c in parsed.recurse().getElementsByClass(harmony.ChordSymbol)]
    assert [(o, r) for o, r, _ in read] == [(0.0, "F"), (4.0, "B-"), (8.0, "C"), (10.0, "A"), (12.0, "F")]
    assert sorted(read[2][2]) == [0, 4, 7, 10] and sorted(read[3][2]) == [0, 4, 9]
    assert len(list(parsed.recurse().notes)) == len(score.notes) + len(read)  # every melody note is there


def test_the_estimated_chords_of_an_arpeggiated_cadence():
    spans = score_chords(arpeggio_score("3/4", tonic=7))
    assert [(s.start, str(s.chord)) for s in spans] == [(0, "G"), (12, "C"), (24, "D"), (36, "G")]


def test_a_short_chord_plays_bass_and_chord_together():
    score = arpeggio_score("4/4")
    notes = accompaniment_notes(score, progression_chords(score, parse_progression("C F G C")))  # a chord a beat
    assert sorted(p for p, s, *_ in notes if s == 4) == [BASS_LOW + 5, 53, 57, 60]


def test_harmonize_writes_musicxml_midi_and_json(tmp_path, capsys):
    tune = tmp_path / "tune.mid"
    tune.write_bytes(midi_bytes(arpeggio_score("4/4", tonic=2)))          # D G A D
    assert main(["harmonize", str(tune), "--out", str(tmp_path / "tune.musicxml")]) == 0
    assert json.loads(capsys.readouterr().out)["chords"] == "D G A D"
    parsed = converter.parse(str(tmp_path / "tune.musicxml"))
    assert [c.figure for c in parsed.recurse().getElementsByClass(harmony.ChordSymbol)] == ["D", "G", "A", "D"]
    assert main(["harmonize", str(tune), "--out", str(tmp_path / "harmonized.mid")]) == 0
    written = (tmp_path / "harmonized.mid").read_bytes()
    assert track_chunks(written)[:2] == track_chunks(tune.read_bytes())
    assert len(mido.MidiFile(str(tmp_path / "harmonized.mid")).tracks) == 3
    assert main(["harmonize", str(tune), "--out", str(tmp_path / "tune.json")]) == 0
    doc = json.loads((tmp_path / "tune.json").read_text())
    assert [c["chord"] for c in doc["chords"]] == ["D", "G", "A", "D"] and doc["chords"][1]["start_beats"] == 4.0


def test_harmonize_refuses_what_it_cannot_read(tmp_path, capsys):
    assert main(["harmonize", str(tmp_path / "none.mid"), "--out", str(tmp_path / "x.mid")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "bad.mid").write_bytes(b"not midi")
    assert main(["harmonize", str(tmp_path / "bad.mid"), "--out", str(tmp_path / "x.wav")]) == 2
    assert "out must end in one of" in capsys.readouterr().err


def test_a_score_keeps_the_chord_symbols_it_carries(tmp_path, capsys):
    from model.representation.abc import abc_text
    score = arpeggio_score("4/4", tonic=0)                                # C F G C, but written as Am Dm7 G7 C
    (tmp_path / "tune.abc").write_text(abc_text(score, [(0, "Am"), (16, "Dm7"), (32, "G7"), (48, "C")]))
    assert main(["harmonize", str(tmp_path / "tune.abc"), "--out", str(tmp_path / "kept.musicxml")]) == 0
    assert json.loads(capsys.readouterr().out)["chords"] == "Am Dm G7 C"   # Dm7 in the vocabulary: Dm
    parsed = converter.parse(str(tmp_path / "kept.musicxml"))
    assert [(float(c.getOffsetInHierarchy(parsed)), c.figure)
            for c in parsed.recurse().getElementsByClass(harmony.ChordSymbol)] == \
        [(0.0, "Am"), (4.0, "Dm"), (8.0, "G7"), (12.0, "C")]
    notes = [n.pitch.midi for n in parsed.recurse().notes if not isinstance(n, harmony.ChordSymbol)]
    assert notes == [p for p, _, _ in score.notes]


def test_abc_carries_notes_and_chord_symbols_music21_reads_back(tmp_path):
    from model.representation.abc import abc_text
    notes = ((60, 0, 4), (64, 4, 8), (66, 8, 20), (70, 20, 24), (72, 24, 32), (61, 32, 36), (60, 36, 40))
    score = Score(notes, ((0, "4/4"),), (0, 16, 32, 48), 4, 100.0)
    text = abc_text(score, [(0, "C"), (8, "D7"), (16, "Bb"), (24, "F#m"), (32, "Bdim")])
    parsed = converter.parseData(text, format="abc")
    sounding = [(float(n.getOffsetInHierarchy(parsed)), n.pitch.midi, float(n.quarterLength))
                for n in parsed.stripTies().recurse().notes if not isinstance(n, harmony.ChordSymbol)]
    assert sounding == [(s / 4, p, (e - s) / 4) for p, s, e in notes]   # ties across the barline; =C after ^C
    assert [(float(c.getOffsetInHierarchy(parsed)), c.root().name, c.chordKind)
            for c in parsed.recurse().getElementsByClass(harmony.ChordSymbol)] == \
        [(0.0, "C", "major"), (2.0, "D", "dominant-seventh"), (4.0, "B-", "major"), (6.0, "F#", "minor"),
         (8.0, "B", "diminished")]


def test_generate_over_chords_writes_them_into_musicxml_abc_and_midi(tmp_path, capsys):
    import torch
    from model.network.checkpoint import save_checkpoint
    from model.network.melody import MelodyNetwork, NetworkConfig
    from model.representation.tokens import MelodyTokenizer
    tok = MelodyTokenizer()
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=tok.vocab_size, hidden_size=16, embedding_dim=8, num_layers=1))
    model = save_checkpoint(tmp_path / "tiny.pt", net, tok)
    common = ["generate", "--model", str(model), "--bars", "4", "--seed", "3"]
    assert main([*common, "--chords", "G C | D7 G", "--chord-tones", "strict", "--out", str(tmp_path / "a.musicxml")]) == 0
    parsed = converter.parse(str(tmp_path / "a.musicxml"))
    assert [c.figure for c in parsed.recurse().getElementsByClass(harmony.ChordSymbol)] == \
        ["G", "C", "D7", "G", "C", "D7", "G"]
    assert main([*common, "--chords", "Am", "--out", str(tmp_path / "a.mid")]) == 0
    assert len(mido.MidiFile(str(tmp_path / "a.mid")).tracks) == 3
    assert main([*common, "--harmonize", "--out", str(tmp_path / "a.abc")]) == 0
    abc = converter.parse(str(tmp_path / "a.abc"))
    assert 1 <= len(list(abc.recurse().getElementsByClass(harmony.ChordSymbol))) <= 8   # at most one a half bar
    assert main([*common, "--chords", "G Q", "--out", str(tmp_path / "b.mid")]) == 2
    assert "'Q'" in capsys.readouterr().err


def test_an_accompanied_midi_reads_back_as_its_melody():
    """A harmonized file as a primer or a harmonize input: the melody, not the accompaniment, is read."""
    from model.representation.parsing import encode_midi
    from model.representation.tokens import MelodyTokenizer
    tok = MelodyTokenizer()
    score = arpeggio_score("3/4", tonic=9)
    spans = progression_chords(score, parse_progression("A | D | E7 | A"))
    assert encode_midi(tok, accompanied_midi(score, spans)) == encode_midi(tok, midi_bytes(score))
