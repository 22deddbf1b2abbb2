"""Tests for model/representation/tokens.py and model/representation/parsing.py: grammar, round trips, MIDI melody extraction, errors."""
import io
from pathlib import Path

import pretty_midi
import pytest
from hypothesis import given, settings, strategies as st

from model.representation.parsing import encode_midi, encode_stream, extract_melody
from model.representation.grammar import GrammarState
from model.representation.tokens import MelodyTokenizer, Note, TokenizerConfig

TOK = MelodyTokenizer()
TOK12 = MelodyTokenizer(TokenizerConfig(steps_per_quarter=12))
names = lambda tok, ids: [tok.vocab[i] for i in ids]  # noqa: E731


@st.composite
def valid_sequences(draw, tok=TOK, max_bars=4):
    """Any sequence the grammar accepts: meters, changes, rests, notes and holds across bars."""
    meters = st.sampled_from(tok.config.meters)
    meter = draw(meters)
    ids, sounding = tok.start_ids(meter), False
    for bar in range(draw(st.integers(1, max_bars))):
        ids.append(tok.bar_id)
        if bar and draw(st.booleans()) and draw(st.booleans()):
            new = draw(meters)
            if new != meter:
                meter = new
                ids.append(tok.meter_id(new))
        for _ in range(tok.bar_steps(meter)):
            kind = draw(st.sampled_from(["rest", "note", "hold", "hold"] if sounding else ["rest", "note"]))
            if kind == "note":
                ids.append(tok.note_id(draw(st.integers(tok.config.min_pitch, tok.config.max_pitch))))
            else:
                ids.append(tok.rest_id if kind == "rest" else tok.hold_id)
            sounding = kind != "rest"
    return ids + [tok.eos_id]


@settings(max_examples=60, deadline=None)
@given(valid_sequences())
def test_notes_round_trip(ids):
    TOK.validate(ids)
    notes, meters = TOK.decode_notes(ids)
    assert TOK.encode_notes(notes, meters, bars=TOK.bar_count(ids)) == ids


@settings(max_examples=40, deadline=None)
@given(valid_sequences(), st.sampled_from([120.0, 61.7, 200.0]))
def test_midi_round_trip(ids, qpm):
    midi = TOK.decode_midi_bytes(ids, qpm=qpm)
    assert encode_midi(TOK, midi) == ids


@settings(max_examples=25, deadline=None)
@given(valid_sequences(tok=TOK12, max_bars=3))
def test_midi_round_trip_triplet_grid(ids):
    assert encode_midi(TOK12, TOK12.decode_midi_bytes(ids)) == ids


@settings(max_examples=40, deadline=None)
@given(valid_sequences())
def test_positions_follow_grammar_state(ids):
    pos = TOK.positions(ids)
    assert len(pos) == len(ids)
    state = GrammarState(TOK)
    for t, p in zip(ids[1:], pos[1:]):
        assert state.allowed()[t]
        state.advance(t)
        assert p == state.position
        assert 0 <= p < TOK.bar_steps(state.meter)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 9), st.integers(36, 96)), min_size=1, max_size=12),
       st.floats(40, 240), st.sampled_from(["3/4", "6/8", "4/4"]))
def test_midi_decode_of_encode_keeps_grid_pitches_and_onsets(gaps_lengths_pitches, qpm, meter):
    """Any monophonic grid melody written to MIDI (any tempo) comes back with the same notes."""
    step = 60.0 / (qpm * 4)
    notes, t = [], 0
    for gap, length, pitch in gaps_lengths_pitches:
        notes.append(Note(pitch, t + gap, t + gap + length))
        t += gap + length
    num, den = (int(x) for x in meter.split("/"))
    pm = _pm((0, False, [(n.pitch, n.start * step, n.end * step) for n in notes]), ts=[(num, den, 0.0)], qpm=qpm)
    buf = io.BytesIO()
    pm.write(buf)
    ids = encode_midi(TOK, buf.getvalue())
    got, meters = TOK.decode_notes(ids)
    assert got == notes and meters == [(0, meter)]


def test_positions_in_three_four():
    ids = TOK.encode_notes([Note(60, 0, 12)], "3/4")
    assert names(TOK, ids)[:4] == ["BOS", "TS_3/4", "BAR", "NOTE_60"]
    assert TOK.positions(ids) == [0, 0, 0] + list(range(1, 12)) + [0, 0]


def test_grammar_masks():
    s = GrammarState(TOK, "6/8")
    assert s.allowed().nonzero().flatten().tolist() == [TOK.meter_id("6/8")]
    s.advance(TOK.meter_id("6/8"))
    assert s.allowed().nonzero().flatten().tolist() == [TOK.bar_id]      # no EOS before a bar
    s.advance(TOK.bar_id)
    m = s.allowed()
    assert not m[TOK.hold_id] and m[TOK.rest_id] and m[TOK.note_id(60)]
    assert not m[TOK.meter_id("3/4")]                                    # no change in bar 1
    assert not m[TOK.pad_id] and not m[TOK.bos_id] and not m[TOK.eos_id]
    s.advance(TOK.note_id(60))
    assert s.allowed()[TOK.hold_id]
    for _ in range(TOK.bar_steps("6/8") - 1):
        s.advance(TOK.hold_id)
    assert s.bars_done == 1 and s.position == 0
    assert s.allowed().nonzero().flatten().tolist() == [TOK.eos_id, TOK.bar_id]
    s.advance(TOK.bar_id)
    m = s.allowed()
    assert m[TOK.meter_id("3/4")] and not m[TOK.meter_id("6/8")] and m[TOK.hold_id]
    s.advance(TOK.meter_id("3/4"))
    assert not s.allowed()[TOK.meter_id("2/4")]                          # one TS per barline
    with pytest.raises(ValueError, match="not allowed"):
        s.advance(TOK.bos_id)


def test_grammar_bar_limit_and_fixed_meter():
    s = GrammarState(TOK, "2/4", bars=1, allow_meter_changes=False)
    for t in [TOK.meter_id("2/4"), TOK.bar_id] + [TOK.rest_id] * 8:
        s.advance(t)
    assert s.allowed().nonzero().flatten().tolist() == [TOK.eos_id]
    s.advance(TOK.eos_id)
    assert s.finished and not s.allowed().any()


def seq(text: str) -> list[int]:
    """'BOS TS_4/4 BAR REST*16 EOS' -> ids."""
    out = []
    for word in text.split():
        name, _, times = word.partition("*")
        out += [TOK.ids[name] if name in TOK.ids else int(name)] * int(times or 1)
    return out


@pytest.mark.parametrize("text, where", [
    ("", "start with BOS"),
    ("BOS TS_4/4 BAR HOLD REST*15 EOS", "HOLD at index 3"),
    ("BOS TS_4/4 BAR REST*15 EOS", "bar 1"),
    ("BOS TS_4/4 BAR REST*16", "without EOS"),
    ("BOS TS_4/4 EOS", "BAR"),
    ("BOS TS_4/4 BAR REST*16 EOS REST", "ended"),
    ("BOS TS_4/4 BAR REST*16 BAR TS_4/4", "TS_4/4"),
    ("BOS TS_4/4 BAR 999", "id 999"),
])
def test_validate_errors(text, where):
    with pytest.raises(ValueError, match=where):
        TOK.validate(seq(text))


def test_config_and_dict_round_trip():
    tok = MelodyTokenizer(TokenizerConfig(steps_per_quarter=12, min_pitch=48, max_pitch=84, meters=["3/4", "6/8"]))
    again = MelodyTokenizer.from_dict(tok.to_dict())
    assert again.vocab == tok.vocab and again.config == tok.config
    with pytest.raises(ValueError, match="steps_per_quarter"):
        TokenizerConfig(steps_per_quarter=0)
    with pytest.raises(ValueError, match="3/16"):
        TokenizerConfig(steps_per_quarter=2, meters=["3/16"])
    with pytest.raises(ValueError, match="meter must be one of"):
        TOK.meter_id("11/8")


def test_encode_notes_folds_and_cleans():
    ids = TOK.encode_notes([Note(20, 0, 4), Note(110, 2, 6), Note(60, 2, 3)])
    notes, _ = TOK.decode_notes(ids)
    assert notes == [Note(44, 0, 2), Note(98 - 12, 2, 6)]        # octave-folded, overlap cut, top note kept
    with pytest.raises(ValueError, match="bars"):
        TOK.encode_notes([Note(60, 0, 40)], bars=1)


def _pm(*instruments, ts=None, qpm=120.0):
    pm = pretty_midi.PrettyMIDI(initial_tempo=qpm)
    for program, is_drum, notes in instruments:
        inst = pretty_midi.Instrument(program, is_drum=is_drum)
        inst.notes = [pretty_midi.Note(100, p, s, e) for p, s, e in notes]
        pm.instruments.append(inst)
    if ts:
        pm.time_signature_changes = [pretty_midi.TimeSignature(n, d, t) for n, d, t in ts]
    return pm


def test_extract_melody_from_polyphony_with_drums():
    q = 0.5                                                               # a quarter at 120 qpm
    melody = [(72, 0, q), (74, q, 2 * q), (76, 2 * q, 4 * q)]
    chords = [(p, i * q, (i + 1) * q) for i in range(8) for p in (48, 52, 55)]
    drums = [(90, i * q / 2, i * q / 2 + 0.1) for i in range(16)]        # high "pitches" on drums
    bass = [(36, 0, 4 * q)]
    pm = _pm((0, False, chords), (40, False, melody + [(60, 0, 2 * q)]), (0, True, drums), (33, False, bass))
    got = [(n.pitch, n.start, n.end) for n in extract_melody(pm)]
    assert got == melody                                                  # the inner 60 lies under 72/74
    notes, meters = TOK.decode_notes(encode_midi(TOK, pm))
    assert notes == [Note(72, 0, 4), Note(74, 4, 8), Note(76, 8, 16)] and meters == [(0, "4/4")]


def test_quantization_and_meter_change_from_midi():
    q = 0.5
    pm = _pm((0, False, [(60, 0.02, q - 0.03), (62, 3 * q + 0.04, 4 * q), (64, 5 * q, 5 * q + 0.3)]),
             ts=[(3, 4, 0.0), (2, 4, 2.5 * q)])      # 3/4, then 2/4 announced mid-bar: from the next barline
    ids = encode_midi(TOK, pm)
    notes, meters = TOK.decode_notes(ids)
    assert notes == [Note(60, 0, 4), Note(62, 12, 16), Note(64, 20, 22)]
    assert meters == [(0, "3/4"), (1, "2/4")]
    assert names(TOK, ids).count("BAR") == 3                             # 12 + 8 + 8 steps hold step 22


def test_triplets_at_twelve_steps_per_quarter():
    third = 0.5 / 3
    pm = _pm((0, False, [(60 + i, i * third, (i + 1) * third) for i in range(3)] + [(67, 0.5, 1.0)]))
    notes, _ = TOK12.decode_notes(encode_midi(TOK12, pm))
    assert notes == [Note(60, 0, 4), Note(61, 4, 8), Note(62, 8, 12), Note(67, 12, 24)]
    back = TOK12.decode_midi(encode_midi(TOK12, pm))
    assert [round(n.start, 6) for n in back.instruments[0].notes] == [0, round(third, 6), round(2 * third, 6), 0.5]


def test_midi_output_has_tempo_and_time_signature():
    ids = TOK.encode_notes([Note(67, 0, 6)], "6/8")
    pm = pretty_midi.PrettyMIDI(io.BytesIO(TOK.decode_midi_bytes(ids, qpm=90)))
    assert round(pm.get_tempo_changes()[1][0], 3) == 90
    assert [(t.numerator, t.denominator) for t in pm.time_signature_changes] == [(6, 8)]
    assert [(n.pitch, round(n.end, 4)) for n in pm.instruments[0].notes] == [(67, round(6 * 60 / 90 / 4, 4))]


def test_garbled_and_empty_midi_raise_value_error(tmp_path):
    good = TOK.decode_midi_bytes(TOK.encode_notes([Note(60, 0, 4)]))
    for bad in [b"", b"MThd garbage that is not midi", good[: len(good) // 2], bytes(range(256))]:
        with pytest.raises(ValueError, match="MIDI"):
            encode_midi(TOK, bad)
    with pytest.raises(ValueError, match="no pitched notes"):
        encode_midi(TOK, _pm((0, True, [(40, 0, 1)])))
    with pytest.raises(ValueError, match="does not exist"):
        encode_midi(TOK, tmp_path / "missing.mid")


# --- music21 streams and MusicXML ------------------------------------------------------------------

def _abc(index):
    from music21 import converter
    from model.representation.corpora import split_abc
    text = (Path(__file__).parent / "data" / "tunes.abc").read_text()
    return converter.parseData(split_abc(text)[index], format="abc")


def test_stream_pickup_is_padded_with_leading_rests():
    ids = encode_stream(TOK, _abc(0))                                     # 6/8 with an eighth-note pickup
    notes, meters = TOK.decode_notes(ids)
    assert meters == [(0, "6/8")]
    assert notes[0] == Note(62, 10, 12) and notes[1] == Note(67, 12, 16)  # D on the last eighth of bar 0
    assert TOK.positions(ids)[ids.index(TOK.note_id(67))] == 1            # G on the downbeat of bar 1
    assert TOK.bar_count(ids) == 5


def test_stream_ties_merge_across_the_barline():
    notes, _ = TOK.decode_notes(encode_stream(TOK, _abc(3)))
    assert notes[2] == Note(72, 8, 20)                                   # c4- | c2: one note, HOLD after BAR


def test_stream_free_meter_raises():
    with pytest.raises(ValueError, match="no time signature"):
        encode_stream(TOK, _abc(2))


def test_stream_chords_grace_notes_and_top_part():
    from music21 import chord, meter, note, stream
    top, low = stream.Part(), stream.Part()
    top.append(meter.TimeSignature("2/4"))
    grace = note.Note("D5", quarterLength=0.5).getGrace()
    top.append([grace, chord.Chord(["C4", "E4", "G4"], quarterLength=1), note.Rest(quarterLength=0.5),
                note.Note("A4", quarterLength=0.5)])
    low.append(meter.TimeSignature("2/4"))
    low.append(note.Note("C3", quarterLength=2))
    score = stream.Score([top.makeMeasures(), low.makeMeasures()])
    notes, meters = TOK.decode_notes(encode_stream(TOK, score))
    assert notes == [Note(67, 0, 4), Note(69, 6, 8)] and meters == [(0, "2/4")]


@settings(max_examples=12, deadline=None)
@given(valid_sequences(max_bars=3))
def test_musicxml_round_trip(ids):
    from music21 import converter
    xml = TOK.decode_musicxml(ids, qpm=100)
    assert xml.startswith(b"<?xml")
    assert encode_stream(TOK, converter.parseData(xml, format="musicxml")) == ids


def test_musicxml_meter_change_and_triplets():
    from music21 import converter
    ids = TOK12.encode_notes([Note(60, 0, 4), Note(62, 4, 8), Note(64, 8, 12), Note(65, 12, 30), Note(67, 36, 48)],
                             [(0, "2/4"), (1, "3/4")], bars=2)
    xml = TOK12.decode_musicxml(ids, qpm=72)
    assert b"<beats>3</beats>" in xml and b"<per-minute>72" in xml
    assert encode_stream(TOK12, converter.parseData(xml, format="musicxml")) == ids


def test_bars_remaining_counts_down_to_zero_at_eos_across_meter_changes():
    notes = [Note(60, 0, 4), Note(62, 4, 12), Note(64, 12, 20), Note(65, 20, 26)]
    ids = TOK.encode_notes(notes, [(0, "2/4"), (1, "3/4"), (2, "2/4")], bars=4)
    remaining = TOK.bars_remaining(ids)
    bars_seen = 0
    for i, t in enumerate(ids):
        bars_seen += t == TOK.bar_id
        assert remaining[i] == 4 - bars_seen  # bars that start after token i
    assert remaining[-1] == 0 and ids[-1] == TOK.eos_id
    last_bar = max(i for i, t in enumerate(ids) if t == TOK.bar_id)
    assert all(r == 0 for r in remaining[last_bar:])
    assert remaining[last_bar - 1] == 1
