"""Forms and first bars as masks during sampling (model/generation/form_plan.py), with tiny models."""
import json

import pytest
import torch

from model.generation.endings import ends_in_cadence
from model.generation.form_plan import COPY, FREE, RHYTHM, FormPlan, letters_plan, table_plan
from model.generation.params import GenerationParams, ParameterError
from model.generation.sampling import Generator
from model.network.checkpoint import save_checkpoint
from model.network.melody import MelodyNetwork, NetworkConfig
from model.representation.form import rhythm_of, tune_bars
from model.representation.tokens import MelodyTokenizer

TOK = MelodyTokenizer()


def tiny(path, rest_bias=0.0, table=None):
    """A tiny untrained network (REST made likelier by ``rest_bias``), with a forms table beside it."""
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=16, embedding_dim=8, num_layers=1,
                                      position_dim=4, max_positions=TOK.max_bar_steps, remaining_dim=3))
    with torch.no_grad():
        net.projection.bias[TOK.rest_id] = rest_bias
    path.mkdir(parents=True, exist_ok=True)
    if table is not None:
        (path / "forms.json").write_text(json.dumps({"format": 1, "plans": table}))
    return Generator(save_checkpoint(path / "tiny.pt", net, TOK))


@pytest.fixture(scope="module")
def restful(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("rests"), rest_bias=8.0)


def bars_of(melody):
    return tune_bars(melody.tokens, TOK)


def test_letters_become_copies_second_endings_and_rhythms():
    plan = letters_plan("AABA'", 8, None, strict=False)
    assert plan.kinds == (FREE, FREE, COPY, RHYTHM, FREE, FREE, RHYTHM, FREE)
    assert plan.refs[2:4] == (0, 1) and plan.refs[6] == 0
    assert letters_plan("AABA'", 8, None, strict=True).kinds == (FREE, FREE, COPY, COPY, FREE, FREE, COPY, COPY)
    assert letters_plan("ABAC", 8, 2, strict=False).refs[4:6] == (0, 1)


def test_the_first_bar_is_never_all_rests(restful):
    # a network that rests most of the time: its first bars would often be silent
    empty = 0
    for seed in range(12):
        for m in restful.generate(GenerationParams(bars=2, count=16, seed=seed, form="none",
                                                   redraw_degenerate=False)).melodies:
            first = bars_of(m)[0]
            empty += all(t == TOK.rest_id for t in first)
    assert empty == 0
    # ... and it does rest: its second bars are often silent (where no rule applies)
    later = [bars_of(m)[1] for m in restful.generate(GenerationParams(bars=2, count=16, seed=0, form="none",
                                                     avoid_repetition=False, redraw_degenerate=False)).melodies]
    assert sum(all(t == TOK.rest_id for t in bar) for bar in later) >= 4


def test_a_pickup_asked_for_and_forbidden(restful):
    for m in restful.generate(GenerationParams(bars=2, count=16, seed=3, pickup=True)).melodies:
        first = bars_of(m)[0]
        assert first[0] == TOK.rest_id and any(TOK.pitch_of(t) is not None for t in first)
    for m in restful.generate(GenerationParams(bars=2, count=16, seed=3, pickup=False, key="D")).melodies:
        assert TOK.pitch_of(bars_of(m)[0][0]) is not None


@pytest.mark.parametrize("beam", [1, 3])
def test_a_strict_form_copies_its_sections_note_for_note(tmp_path, beam):
    gen = tiny(tmp_path)
    params = GenerationParams(bars=8, form="AABB", form_strict=True, seed=5, count=2 if beam == 1 else 1,
                              beam_width=beam, key="G", min_pitch=60, max_pitch=84, tonic_pull=0.0)
    for m in gen.generate(params).melodies:
        bars = bars_of(m)
        assert bars[2:4] == bars[0:2] and bars[6:8] == bars[4:6]
        assert bars[0:2] != bars[4:6]
        assert all(60 <= n.pitch <= 84 for n in m.notes)


def test_a_plain_repeat_has_a_second_ending_and_a_primed_one_keeps_the_rhythm(tmp_path):
    gen = tiny(tmp_path)
    for m in gen.generate(GenerationParams(bars=8, form="AA'BA", phrase_bars=2, seed=9, count=4)).melodies:
        bars = bars_of(m)
        rhythm = [rhythm_of(b, TOK) for b in bars]
        assert rhythm[2] == rhythm[0]                       # A': bar 1 of the section keeps the rhythm
        assert bars[6] == bars[0] and rhythm[7] == rhythm[1]  # A again: a copy, then a second ending


def test_a_copy_gives_way_to_the_cadence(tmp_path):
    gen = tiny(tmp_path)
    for m in gen.generate(GenerationParams(bars=4, form="AA", form_strict=True, cadence="tonic", key="C",
                                           seed=2, count=4)).melodies:
        bars = bars_of(m)
        assert bars[2] == bars[0]
        assert ends_in_cadence(bars[3], TOK, 0, "4/4")


def test_the_default_form_is_drawn_from_the_table_beside_the_model(tmp_path):
    # every 5-bar 3/4 tune in the table repeats bar 0 at bar 2, varies bar 1 at bar 3 and has a pickup at step 8
    table = {"3/4": {"5": [[8, 12, "n n e2 v2 e4"]]}}
    gen = tiny(tmp_path, table=table)
    # a rhythm-only or new bar is free, and so is the last bar (the ending's)
    # and the network's form input is told the tune's own labels: (relation id, bars back - 1 or 16 for none)
    assert table_plan(table, "3/4", 5, 12, 0, 0) == FormPlan((FREE, FREE, COPY, RHYTHM, FREE), (0, 1, 0, 1, 4), 8,
                                                             (True, True, False, True, False),
                                                             ((0, 16), (0, 16), (1, 1), (3, 1), (1, 3)))
    assert table_plan(table, "6/8", 5, 12, 0, 0) is not None and table_plan(table, "3/4", 4, 12, 0, 0) is None
    for m in gen.generate(GenerationParams(bars=5, meter="3/4", seed=1, count=3)).melodies:
        bars = bars_of(m)
        assert bars[2] == bars[0] and rhythm_of(bars[3], TOK) == rhythm_of(bars[1], TOK)
        assert all(t == TOK.rest_id for t in bars[0][:8]) and TOK.pitch_of(bars[0][8]) is not None
        assert bars[1] != bars[0] and bars[3] not in bars[:3]   # bars not labelled exact are no copies
    off = gen.generate(GenerationParams(bars=5, meter="3/4", seed=1, count=3, form="none")).melodies
    assert any(bars_of(m)[2] != bars_of(m)[0] for m in off)
    # a pickup asked for wins over the table's start; the same request gives the same bytes
    again = GenerationParams(bars=5, meter="3/4", seed=1, count=3, pickup=False)
    assert [m.midi_bytes() for m in gen.generate(again).melodies] == [m.midi_bytes() for m in gen.generate(again).melodies]
    assert all(TOK.pitch_of(bars_of(m)[0][0]) is not None for m in gen.generate(again).melodies)


def test_a_share_of_the_rhythm_only_bars_keeps_its_rhythm(tmp_path, monkeypatch):
    import model.generation.form_plan as form_plan
    # 33 bars, each after the first a rhythm-only repeat of the bar before it; the last is the ending's
    table = {"4/4": {"33": [[0, 16, " ".join(["n"] + ["r1"] * 32)]]}}
    gen = tiny(tmp_path, table=table)
    plans = [table_plan(table, "4/4", 33, 16, seed, 0) for seed in range(20)]
    kept = [k == RHYTHM for p in plans for k in p.kinds[1:-1]]
    assert set(k for p in plans for k in p.kinds) == {FREE, RHYTHM}
    assert abs(sum(kept) / len(kept) - form_plan.RHYTHM_KEPT) < 0.05   # 620 draws around the share
    assert all(p.refs[b] == (b - 1 if k == RHYTHM else b) for p in plans for b, k in enumerate(p.kinds))
    assert plans[3] == table_plan(table, "4/4", 33, 16, 3, 0)          # drawn from the seed
    for m in gen.generate(GenerationParams(bars=33, meter="4/4", seed=3, form_strict=False)).melodies:
        bars = bars_of(m)
        assert all(rhythm_of(bars[b], TOK) == rhythm_of(bars[b - 1], TOK)
                   for b, k in enumerate(plans[3].kinds) if k == RHYTHM)
    monkeypatch.setattr(form_plan, "RHYTHM_KEPT", 0.0)
    assert all(k == FREE for k in table_plan(table, "4/4", 33, 16, 3, 0).kinds)


def test_a_bar_not_labelled_exact_never_ends_up_a_copy(tmp_path):
    # a network that repeats itself: the table's new bars must still differ from every earlier bar
    table = {"2/4": {"6": [[0, 8, "n n n n n n"]]}}
    gen = tiny(tmp_path, rest_bias=8.0, table=table)
    for seed in range(4):
        for m in gen.generate(GenerationParams(bars=6, meter="2/4", seed=seed, count=8, avoid_repetition=False,
                                               redraw_degenerate=False)).melodies:
            bars = bars_of(m)
            assert all(bars[b] not in bars[:b] for b in range(1, 5))   # the last bar is the ending's: free
    # without the table's plan the same network repeats whole bars
    free = [bars_of(m) for m in gen.generate(GenerationParams(bars=6, meter="2/4", seed=0, count=8, form="none",
                                                              avoid_repetition=False, redraw_degenerate=False)).melodies]
    assert sum(bars[b] in bars[:b] for bars in free for b in range(1, 6)) >= 4


def test_a_bar_that_keeps_a_rhythm_is_not_left_to_become_a_copy(tmp_path, monkeypatch):
    """Under a RHYTHM mask the steps after the copied bar's last onset are forced, so a bar that has
    matched its copied bar so far would end up an exact copy unless its last onset differs: with a
    network that plays one pitch, every varied bar keeps the rhythm and still differs from the bar it
    varies; without that rule many become copies, or lose the rhythm where the last step's rule (no
    exact copy of any earlier bar) and the rhythm mask leave nothing and both give way."""
    from model.generation.form_plan import FormMasks
    table = {"2/4": {"8": [[0, 8, "n v1 v1 v1 v1 v1 v1 n"]]}}
    gen = tiny(tmp_path, table=table)
    with torch.no_grad():  # every onset C4, most steps holding it
        gen.model.projection.bias[TOK.note_id(60)] = 12.0
        gen.model.projection.bias[TOK.hold_id] = 13.0
    gen = Generator(save_checkpoint(tmp_path / "one-pitch.pt", gen.model, TOK))

    def varied_bars(**kw):
        out = []
        for seed in range(3):
            for m in gen.generate(GenerationParams(bars=8, meter="2/4", seed=seed, count=4, avoid_repetition=False,
                                                   redraw_degenerate=False, **kw)).melodies:
                bars = bars_of(m)
                out += [(bars[b], bars[b - 1]) for b in range(1, 7)]
        return out

    kept = varied_bars()
    assert all(rhythm_of(bar, TOK) == rhythm_of(ref, TOK) for bar, ref in kept)
    assert all(bar != ref for bar, ref in kept)
    monkeypatch.setattr(FormMasks, "_no_copy_by_rhythm", lambda *a: None)
    broken = [bar == ref or rhythm_of(bar, TOK) != rhythm_of(ref, TOK) for bar, ref in varied_bars()]
    assert sum(broken) >= 8  # 16 of 72 when written


@pytest.mark.parametrize("fields,field", [
    ({"form": "ABX"}, "form"), ({"form": "aabb"}, "form"), ({"form": 4}, "form"),
    ({"form": "AABB", "bars": 6}, "phrase_bars"), ({"form": "AB", "bars": 8, "phrase_bars": 3}, "phrase_bars"),
    ({"phrase_bars": 4}, "phrase_bars"), ({"form": "AB", "min_bars": 2, "max_bars": 8}, "form"),
    ({"pickup": True, "primer": [[60, 0, 1]]}, "pickup"), ({"pickup": "yes"}, "pickup"),
    ({"form_strict": 1}, "form_strict"),
    ({"form": "AB", "primer": [[60, 0, 1]], "regenerate": {"from_bar": 1, "to_bar": 1}}, "form"),
])
def test_a_bad_form_names_its_field(fields, field):
    with pytest.raises(ParameterError) as e:
        GenerationParams(**fields).validate()
    assert e.value.field == field
    GenerationParams(form="AA'BA", bars=16).validate()
    GenerationParams(form="AB", bars=6, phrase_bars=3, pickup=False).validate()
