"""Form read from hand-made tunes: bar labels, sections, pickups (model/representation/form.py)."""
import json

from music21 import converter

from model.representation.form import (EXACT, NEW, RHYTHM, VARIANT, BarLabel, bar_labels, decode_labels,
                                       encode_labels, form_table, main, section_form, tune_bars, tune_form)
from model.representation.parsing import encode_stream
from model.representation.tokens import MelodyTokenizer, Note

TOK = MelodyTokenizer()


def tune(*bars, meter="2/4"):
    """Token ids of bars given as [(pitch or None for a rest, steps), ...] (2/4: 8 steps a bar)."""
    notes, step = [], 0
    for bar in bars:
        for pitch, steps in bar:
            if pitch is not None:
                notes.append(Note(pitch, step, step + steps))
            step += steps
    return TOK.encode_notes(notes, meter, bars=len(bars))


A1, A2 = [(60, 2), (62, 2), (64, 4)], [(65, 4), (64, 4)]
B1, B2 = [(67, 2), (67, 2), (69, 4)], [(67, 4), (60, 4)]
AABB = tune(A1, A2, A1, A2, B1, B2, B1, B2)


def test_an_aabb_tune_repeats_its_bars_exactly_and_reads_as_aabb():
    labels = bar_labels(tune_bars(AABB, TOK), TOK)
    assert labels == [BarLabel(NEW, None), BarLabel(NEW, None), BarLabel(EXACT, 0), BarLabel(EXACT, 1),
                      BarLabel(RHYTHM, 2), BarLabel(RHYTHM, 3), BarLabel(EXACT, 4), BarLabel(EXACT, 5)]
    assert section_form(tune_bars(AABB, TOK), TOK, phrase_bars=2) == "AABB"


def test_a_varied_repeat_is_a_variant_and_a_primed_section():
    # the second A keeps the rhythm and two of three pitches of bar 0, and ends differently (a second ending)
    varied = [(60, 2), (62, 2), (67, 4)]
    ids = tune(A1, A2, varied, [(64, 4), (60, 4)])
    labels = bar_labels(tune_bars(ids, TOK), TOK)
    assert labels[2] == BarLabel(VARIANT, 0)
    assert labels[3] == BarLabel(RHYTHM, 1)      # same rhythm as bar 1, one pitch of two: not most
    assert section_form(tune_bars(ids, TOK), TOK, phrase_bars=2) == "AA'"
    # a bar refers to the nearest earlier bar of its best kind
    again = bar_labels(tune_bars(tune(A1, A1, A2, A1), TOK), TOK)
    assert again[3] == BarLabel(EXACT, 1)


def test_new_material_gets_new_letters_and_a_tie_only_matches_a_tie():
    ids = tune(A1, A2, B1, [(69, 8)], [(None, 2), (60, 6)], [(72, 8)], A1)
    assert section_form(tune_bars(ids, TOK), TOK, phrase_bars=2) == "ABCA"  # the short last phrase: one bar
    # bar 2 begins with a note tied over from bar 1: it does not match bar 0, which begins with rests
    tied = tune([(None, 4), (60, 4)], [(60, 2), (62, 2), (64, 8)], [(60, 4)], [(None, 4), (62, 4)])
    labels = bar_labels(tune_bars(tied, TOK), TOK)
    assert labels[2] == BarLabel(NEW, None)
    assert labels[3] == BarLabel(RHYTHM, 0)


def test_a_pickup_read_through_music21_is_a_partial_first_bar():
    abc = "X:1\nT:pickup\nM:3/4\nL:1/4\nK:C\nG | c2 e | d2 B | c3 |]\n"
    ids = encode_stream(TOK, converter.parse(abc, format="abc"))
    form = tune_form(ids, TOK)
    assert form["pickup"] and not form["empty_first_bar"]
    assert form["first_onset"] == (0, 8) and form["first_note_position"] == 8 / 12  # the third beat of 3/4
    plain = tune_form(tune(A1, A2), TOK)
    assert not plain["pickup"] and plain["first_note_position"] == 0.0
    empty = tune_form(tune([(None, 8)], A1), TOK)
    assert empty["empty_first_bar"] and not empty["pickup"] and empty["first_onset"] == (1, 0)


def test_labels_survive_the_tables_encoding():
    labels = bar_labels(tune_bars(AABB, TOK), TOK)
    assert encode_labels(labels) == "n n e2 e2 r2 r2 e2 e2"
    assert decode_labels(encode_labels(labels)) == labels


class _Tune:
    def __init__(self, tokens, meter):
        self.tokens, self.meter = tokens, meter


def test_the_table_groups_plans_by_meter_and_length_and_samples_large_groups():
    pickup = tune([(None, 6), (67, 2)], A1, A2, B1)
    tunes = [_Tune(AABB, "2/4")] * 30 + [_Tune(pickup, "2/4"), _Tune(tune([(None, 8)], A1), "2/4")]
    table = form_table(tunes, TOK, max_plans=5)
    assert set(table) == {"2/4"} and set(table["2/4"]) == {"8", "4"}   # the empty first bar is left out
    assert table["2/4"]["8"] == [[0, 8, "n n e2 e2 r2 r2 e2 e2"]] * 5
    assert table["2/4"]["4"] == [[6, 8, "n n n r2"]]


def test_the_table_command_writes_json(tmp_path, monkeypatch):
    import model.representation.corpora as corpora
    from model.representation.tokens import TokenizerConfig

    class Corpus:
        tokenizer_config = TokenizerConfig()
        tunes = [corpora.Tune(f"t{i}", AABB, "2/4") for i in range(40)] + \
            [corpora.Tune(f"oneills1850/0001-0050.abc#{i}", AABB, "2/4") for i in range(10)]

    monkeypatch.setattr(corpora, "load_corpus", lambda spec: Corpus())
    out = tmp_path / "forms.json"
    assert main(["--data", "test", "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["format"] == 2 and table["plans"]["2/4"]["8"][0][2] == "n n e2 e2 r2 r2 e2 e2"
    assert 24 < table["tunes"] <= 50 and len(table["plans"]["2/4"]["8"]) == 24   # the train split, sampled
    # and apart, the tunes of each style (here only the Irish collection's have one)
    assert list(table["styles"]) == ["irish"] and 0 < len(table["styles"]["irish"]["2/4"]["8"]) <= 10


def test_form_statistics_of_a_set_of_tunes():
    from model.evaluation.form_figures import form_statistics
    pickup = tune([(None, 6), (67, 2)], A1, A2, A1)
    empty = tune([(None, 8)], A1)
    figures = form_statistics([AABB, pickup, empty], TOK)
    assert figures["tunes"] == 3 and figures["bars"] == 14
    assert figures["exact_repeat_share"] == 5 / 14          # AABB: 4 exact bars; the pickup tune: bar 3
    assert figures["rhythm_repeat_share"] == 7 / 14         # ... and AABB's B bars repeat A's rhythm
    assert figures["pickup_share"] == 1 / 3 and figures["empty_first_bars"] == 1
    assert figures["first_note_position"] == (0 + 6 / 8 + 0) / 3
    assert figures["forms"] == {"AB": 1 / 3, "AA": 1 / 3, "A": 1 / 3}   # the pickup bar is left out
