"""Chord symbols and progressions (model/representation/chords.py) and the chord HMM (harmony.py)."""
import numpy as np
import pytest

from model.representation.chords import (UNKNOWN_CHORD_ID, Chord, chord_at, parse_chord, parse_progression,
                                         progression_text, spell_flats)
from model.representation.harmony import (HARMONY_PATH, Bar, HarmonyModel, TimedNote, harmonic_segments,
                                          most_notes_chords)


def test_chord_symbols_parse_to_roots_qualities_and_pitch_classes():
    assert parse_chord("G").pitch_classes == {7, 11, 2}
    assert parse_chord("Am").pitch_classes == {9, 0, 4}
    assert parse_chord("F#m") == Chord(6, 1) and parse_chord("Gbmin") == Chord(6, 1)
    assert parse_chord("Bb").pitch_classes == {10, 2, 5}
    assert parse_chord("D7").pitch_classes == {2, 6, 9, 0}
    assert parse_chord("Bdim").pitch_classes == {11, 2, 5}
    ids = {parse_chord(r + q).id for r in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
           for q in ("", "m", "dim", "7")}
    assert ids == set(range(UNKNOWN_CHORD_ID))                      # 48 chords, ids 0..47
    assert all(Chord.from_id(i).id == i for i in range(UNKNOWN_CHORD_ID))
    assert str(parse_chord("A#")) == "Bb" and parse_chord("Bb").name(flats=False) == "A#"


@pytest.mark.parametrize("bad", ["H7", "Gmaj7", "C9", "", "Xm", "G/B"])
def test_an_unknown_chord_is_named_with_the_vocabulary(bad):
    with pytest.raises(ValueError) as e:
        parse_chord(bad)
    assert repr(bad) in str(e.value) and "dominant seventh" in str(e.value)


def test_progressions_split_bars_evenly_and_repeat():
    bars = parse_progression("G C | D7 G")
    assert progression_text(bars) == "G C | D7 G"
    assert [chord_at(bars, 0, p, 16).id for p in (0, 7, 8, 15)] == [parse_chord(c).id for c in "G G C C".split()]
    assert chord_at(bars, 3, 12, 16) == parse_chord("G") and chord_at(bars, 2, 0, 16) == parse_chord("G")
    assert parse_progression(["G", "C", "D7 G"]) == [[parse_chord("G")], [parse_chord("C")],
                                                     [parse_chord("D7"), parse_chord("G")]]
    with pytest.raises(ValueError, match="'Q'"):
        parse_progression(["G", "Q"])
    with pytest.raises(ValueError, match="a list of bars"):
        parse_progression([1, 2])


def test_flat_keys_spell_flats():
    assert spell_flats(5, "major") and spell_flats(2, "minor") and not spell_flats(7, "major")


def test_harmonic_rhythm_is_half_bars_in_meters_of_four_six_eight_twelve_else_bars():
    assert harmonic_segments([Bar(0, 4, "4/4"), Bar(4, 4, "4/4")]) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert harmonic_segments([Bar(0, 3, "6/8")]) == [(0, 1.5), (1.5, 3)]
    assert harmonic_segments([Bar(0, 3, "3/4"), Bar(3, 2, "2/4")]) == [(0, 3), (3, 5)]
    assert harmonic_segments([Bar(0, 1, "4/4"), Bar(1, 4, "4/4")]) == [(0, 1), (1, 3), (3, 5)]  # a pickup


def arpeggios(tonic: int, meter: str, minor: bool = False):
    """I-IV-V-I (i-iv-V-i), one chord a bar, each bar its chord's tones as quarter notes from the root."""
    length = {"4/4": 4, "3/4": 3}[meter]
    third = 3 if minor else 4
    chords = [(0, third), (5, third), (7, 4), (0, third)]
    notes, bars = [], []
    for b, (root, third_) in enumerate(chords):
        tones = [root, root + third_, root + 7, root + 12][:length]
        notes += [TimedNote(60 + tonic + t, b * length + i, b * length + i + 1) for i, t in enumerate(tones)]
        bars.append(Bar(b * length, length, meter))
    return notes, bars, [Chord((tonic + r) % 12, int(minor and t == 3)) for r, t in chords]


@pytest.mark.parametrize("tonic,meter,minor", [(0, "4/4", False), (7, "3/4", False), (2, "4/4", False),
                                               (9, "3/4", True)])
def test_an_arpeggiated_cadence_gives_its_chords(tonic, meter, minor):
    notes, bars, truth = arpeggios(tonic, meter, minor)
    model = HarmonyModel.load()
    found = model.chords(notes, bars)
    per_bar = [c for s, _, c in found if float(s) in {b.start for b in bars}]
    assert per_bar == truth, [str(c) for c in per_bar]
    if meter == "4/4":  # both halves of each bar
        assert [c for _, _, c in found] == [c for c in truth for _ in (0, 1)]


def test_the_baseline_takes_the_chord_with_most_melody_time():
    notes = [TimedNote(67, 0, 2), TimedNote(71, 2, 3), TimedNote(62, 3, 4)]   # G B D
    assert [c for *_, c in most_notes_chords(notes, [Bar(0, 4, "3/4")], key=(7, "major"))] == [Chord(7, 0)]


def test_viterbi_follows_the_transitions_when_the_melody_is_silent():
    model = HarmonyModel.load()
    # a key-relative table where I goes to V and V to I, certainly
    trans = np.full((2, 48, 48), -50.0)
    trans[:, 0, 28], trans[:, 28, 0] = 0.0, 0.0
    init = np.full((2, 48), -50.0)
    init[:, 0] = 0.0
    toy = HarmonyModel(init, trans, model.emissions)
    bars = [Bar(i * 3, 3, "3/4") for i in range(4)]
    found = [c for *_, c in toy.chords([TimedNote(62, 0, 1)], bars, key=(2, "major"))]  # D major, one note
    assert found == [Chord(2, 0), Chord(9, 0), Chord(2, 0), Chord(9, 0)]


def test_the_shipped_tables_are_probabilities_and_say_where_they_come_from():
    model = HarmonyModel.load(HARMONY_PATH)
    assert np.allclose(np.exp(model.transitions).sum(-1), 1, atol=1e-3)
    assert np.allclose(np.exp(model.emissions).sum(-1), 1, atol=1e-3)
    assert "chorales" in model.provenance["data"] and model.provenance["train_chorales"] > 100
