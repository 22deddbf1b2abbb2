"""Melodies over given chords (model/generation/chord_tones.py): the strict mask, the soft pull, checks."""
import pytest
import torch

from model.generation.chord_tones import CHORD_PULL, ChordTones
from model.generation.endings import pitch_class_columns, strong_positions
from model.generation.params import GenerationParams, ParameterError
from model.generation.sampling import Generator
from model.network.checkpoint import save_checkpoint
from model.network.melody import MelodyNetwork, NetworkConfig
from model.representation.chords import chord_at, parse_progression
from model.representation.tokens import MelodyTokenizer
from support import alone_and_batched

TOK = MelodyTokenizer()


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=24, embedding_dim=8, num_layers=2,
                                      position_dim=4, max_positions=TOK.max_bar_steps))
    return Generator(save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", net, TOK))


def strong_notes(melody, chords):
    """(is a chord tone, pitch, bar, position) of every note starting on a strong position, read off the
    decoded notes independently of the masks."""
    S = TOK.bar_steps(melody.meter)
    strong = strong_positions(melody.meter, TOK.steps_per_quarter, S)
    bars = parse_progression(chords)
    out = []
    for n in melody.notes:
        bar, pos = divmod(n.start, S)
        if pos in strong:
            out.append((n.pitch % 12 in chord_at(bars, bar, pos, S).pitch_classes, n.pitch, bar, pos))
    return out


@pytest.mark.parametrize("meter,chords", [("4/4", "G C | D7 G"), ("3/4", ["Am", "Dm", "E7"]), ("6/8", "F Bb | C7")])
def test_strict_holds_for_every_sampled_melody(gen, meter, chords):
    seen = 0
    for seed in range(6):
        g = gen.generate(GenerationParams(bars=5, meter=meter, seed=seed, count=3, chords=chords,
                                          chord_tones="strict"))
        for m in g.melodies:
            notes = strong_notes(m, chords)
            assert all(ok for ok, *_ in notes), [n for n in notes if not n[0]]
            seen += len(notes)
    assert seen > 30  # strong beats did get notes, and the progression repeated over the 5 bars


def test_strict_holds_for_beam_search_and_ranges(gen):
    chords = "C Am | F G7"
    for kw in ({"beam_width": 3, "count": 2}, {"min_bars": 2, "max_bars": 6, "count": 2},
               {"beam_width": 2, "cadence": "none", "key": "C"}):
        for seed in range(3):
            for m in gen.generate(GenerationParams(bars=4, seed=seed, chords=chords, chord_tones="strict",
                                                   **kw)).melodies:
                assert all(ok for ok, *_ in strong_notes(m, chords))


def test_without_strict_the_untrained_model_misses_chord_tones_and_soft_leans_to_them(gen):
    def share(mode):
        hits = [ok for seed in range(8) for m in gen.generate(GenerationParams(
            bars=4, seed=seed, count=2, chords="G C | D7 G", chord_tones=mode)).melodies
            for ok, *_ in strong_notes(m, "G C | D7 G")]
        return sum(hits) / len(hits)
    none, soft = share("none"), share("soft")
    assert none < 0.6 and soft > none + 0.15   # three or four tones of twelve, then pulled by CHORD_PULL nats


def test_strict_and_soft_give_the_same_bytes_alone_and_in_a_batch(gen):
    requests = [GenerationParams(bars=4, seed=s, **kw) for s, kw in enumerate([
        {"chords": "G C | D7 G", "chord_tones": "strict"}, {"chords": ["Am", "E7"], "count": 2},
        {}, {"chords": "F C", "chord_tones": "strict", "beam_width": 2}])]
    alone, together = alone_and_batched(gen, requests)
    assert together == alone


def test_the_bias_is_at_strong_positions_only_and_the_cadence_keeps_the_last_bar():
    cols = pitch_class_columns(TOK)
    bars = parse_progression("C | G7")
    strict = ChordTones(TOK, "4/4", bars, "strict", cols, cadence_bar=3)
    assert strict.bias(0, 1) is None and strict.bias(0, 4) is None
    down = strict.bias(1, 0)  # G7: G B D F
    for p in range(60, 72):
        assert (down[TOK.note_id(p)] == 0) == (p % 12 in (7, 11, 2, 5))
    assert down[TOK.rest_id] == 0 and down[TOK.hold_id] == 0
    assert strict.bias(3, 8) is None and strict.bias(3, 0) is not None   # the cadence point of 4/4's last bar
    soft = ChordTones(TOK, "4/4", bars, "soft", cols).bias(2, 8)         # bar 2 is C again
    assert soft[TOK.note_id(64)] == CHORD_PULL and soft[TOK.note_id(62)] == 0 and soft[TOK.rest_id] == 0


def test_chords_are_checked_and_an_unknown_chord_is_named():
    with pytest.raises(ParameterError) as e:
        GenerationParams(chords="G C | H7 G").validate()
    assert e.value.field == "chords" and "'H7'" in str(e.value) and "dominant seventh" in str(e.value)
    with pytest.raises(ParameterError) as e:
        GenerationParams(chords="G C", chord_tones="always").validate()
    assert e.value.field == "chord_tones" and "strict" in str(e.value)
    with pytest.raises(ParameterError, match="at least one chord in every bar"):
        GenerationParams(chords="G || C").validate()
    GenerationParams(chords=["G", "C", "D7 G"], chord_tones="strict").validate()
