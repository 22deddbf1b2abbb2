"""Tests for model/generation/sampling.py on a tiny untrained model: validity, constraints, determinism, primer, beams."""
import io

import mido
import pytest
import torch

from model.network.checkpoint import save_checkpoint
from model.network.melody import MelodyNetwork, NetworkConfig
from model.representation.keys import SCALES
from model.generation.params import GenerationParams, ParameterError
from model.generation.sampling import Generator, generate_melody
from model.representation.tokens import MelodyTokenizer, Note
from support import biased_checkpoint

TOK = MelodyTokenizer()
PRIMER = [[60, 0, 1], [62, 1, 0.5], [64, 1.5, 1.5]]  # ends on beat 3 of a 4/4 bar, then a rest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=24, embedding_dim=8, num_layers=2,
                                      position_dim=4, max_positions=TOK.max_bar_steps))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", net, TOK)


@pytest.fixture(scope="module")
def gen(checkpoint):
    return Generator(checkpoint)


def test_same_seed_same_bytes_and_other_seed_differs(gen, checkpoint):
    p = GenerationParams(bars=4, seed=7, count=2, temperature=1.2, top_p=0.95)
    a, b = gen.generate(p), Generator(checkpoint).generate(p)
    assert [m.midi_bytes() for m in a.melodies] == [m.midi_bytes() for m in b.melodies]
    assert a.melodies[0].tokens != gen.generate(GenerationParams(bars=4, seed=8)).melodies[0].tokens


def test_seed_is_drawn_and_reported_when_missing(gen):
    g = gen.generate(GenerationParams(bars=2))
    assert g.params.seed == g.seed
    again = gen.generate(GenerationParams(bars=2, seed=g.seed))
    assert again.melodies[0].tokens == g.melodies[0].tokens


@pytest.mark.parametrize("key,scale,lo,hi", [("D", "dorian", 60, 72), ("Bb", "pentatonic_minor", 50, 80),
                                             ("F#", None, 36, 96)])
def test_every_note_in_key_and_range(gen, key, scale, lo, hi):
    g = gen.generate(GenerationParams(bars=8, seed=1, count=6, key=key, scale=scale, min_pitch=lo, max_pitch=hi,
                                      temperature=2.0))
    steps = SCALES[scale or "major"]
    tonic = {"D": 2, "Bb": 10, "F#": 6}[key]
    pitches = [n.pitch for m in g.melodies for n in m.notes]
    assert len(pitches) > 50
    assert all(lo <= p <= hi and (p - tonic) % 12 in steps for p in pitches)


def test_unconstrained_untrained_model_leaves_the_scale(gen):
    # the constraint test above is meaningful: without masks this model plays out-of-key notes
    g = gen.generate(GenerationParams(bars=8, seed=1, count=6, temperature=2.0))
    assert any((n.pitch - 2) % 12 not in SCALES["dorian"] for m in g.melodies for n in m.notes)


@pytest.mark.parametrize("bars,meter", [(1, "4/4"), (5, "3/4"), (3, "6/8")])
def test_bars_and_meter_honored(gen, bars, meter):
    for m in gen.generate(GenerationParams(bars=bars, meter=meter, seed=3, count=2)).melodies:
        TOK.validate(m.tokens)
        assert TOK.bar_count(m.tokens) == bars
        assert m.tokens[:2] == TOK.start_ids(meter) and m.tokens[-1] == TOK.eos_id
        assert len(m.tokens) == 3 + bars * (1 + TOK.bar_steps(meter))


def test_count_gives_distinct_melodies(gen):
    g = gen.generate(GenerationParams(bars=4, seed=5, count=5))
    assert len(g.melodies) == 5 and [m.index for m in g.melodies] == list(range(5))
    assert len({tuple(m.tokens) for m in g.melodies}) == 5


def test_primer_included_and_excluded(gen):
    expected = [Note(60, 0, 4), Note(62, 4, 6), Note(64, 6, 12)]
    with_primer = gen.generate(GenerationParams(bars=3, seed=11, primer=PRIMER)).melodies[0]
    assert with_primer.notes[:3] == expected
    assert TOK.bar_count(with_primer.tokens) == 1 + 3
    without = gen.generate(GenerationParams(bars=3, seed=11, primer=PRIMER, include_primer=False)).melodies[0]
    assert TOK.bar_count(without.tokens) == 3
    continuation = [Note(n.pitch, n.start - 16, n.end - 16) for n in with_primer.notes if n.start >= 16]
    assert without.notes == continuation


def test_a_primer_longer_than_the_melody_can_be_left_out(gen):
    """The quality gate judges the generated bars: with include_primer false they come without the
    primer already, and a primer of 6 bars before 2 generated ones once made the gate cut 6 bars off
    them (an error: a token sequence without EOS)."""
    long_primer = [[60 + (i % 5), float(i), 1.0] for i in range(24)]  # 6 bars of 4/4
    for seed in range(3):
        with_primer = gen.generate(GenerationParams(bars=2, seed=seed, primer=long_primer)).melodies[0]
        without = gen.generate(GenerationParams(bars=2, seed=seed, primer=long_primer,
                                                include_primer=False)).melodies[0]
        assert TOK.bar_count(without.tokens) == 2 and TOK.bar_count(with_primer.tokens) == 6 + 2
        continuation = [Note(n.pitch, n.start - 96, n.end - 96) for n in with_primer.notes if n.start >= 96]
        assert without.notes == continuation


def test_midi_primer_is_fed_and_kept(gen):
    primer_ids = TOK.encode_notes([Note(67, 0, 2), Note(65, 2, 3), Note(64, 3, 12)], "3/4")
    g = gen.generate(GenerationParams(bars=2, seed=2, primer=TOK.decode_midi_bytes(primer_ids)))
    m = g.melodies[0]
    assert m.tokens[:len(primer_ids) - 1] == primer_ids[:-1]
    assert m.meter == "3/4" and TOK.bar_count(m.tokens) == 1 + 2


def test_state_is_carried_not_recomputed(gen, monkeypatch):
    calls = {"forward": 0, "step": 0}
    forward, step = gen.model.forward, gen.model.step

    def counting_forward(*a, **k):
        calls["forward"] += 1
        return forward(*a, **k)

    def counting_step(*a, **k):
        calls["step"] += 1
        return step(*a, **k)
    monkeypatch.setattr(gen.model, "forward", counting_forward)
    monkeypatch.setattr(gen.model, "step", counting_step)
    m = gen.generate(GenerationParams(bars=2, seed=1, primer=PRIMER)).melodies[0]
    prefix = len(TOK.encode_notes([Note(60, 0, 4), Note(62, 4, 6), Note(64, 6, 12)])) - 1  # without EOS
    assert calls["forward"] == 1  # the primer, once
    assert calls["step"] == len(m.tokens) - prefix  # one step per new token, each fed once


def test_top_k_one_and_tiny_top_p_are_greedy(gen):
    greedy = [gen.generate(GenerationParams(bars=2, seed=s, top_k=1)).melodies[0].tokens for s in (1, 2)]
    nucleus = [gen.generate(GenerationParams(bars=2, seed=s, top_p=1e-6)).melodies[0].tokens for s in (1, 2)]
    assert greedy[0] == greedy[1] == nucleus[0] == nucleus[1]


def masked_log_prob(gen, tokens, params):
    """Sum of log-probabilities of the chosen grid steps under the same masks, by a full forward pass."""
    ids = torch.tensor([tokens])
    pos = torch.tensor([TOK.positions(tokens)])
    with torch.no_grad():
        logits, _ = gen.model(ids, pos)
    bias, total, sounding = gen.step_bias(params), 0.0, False
    for i in range(1, len(tokens)):
        t = tokens[i]
        if TOK.is_step(t):
            logp = torch.log_softmax(logits[0, i - 1] + bias[int(sounding)], -1)
            total += float(logp[t])
            sounding = t != TOK.rest_id
    return total


def test_beam_search_scores_are_the_sequences_log_probabilities(gen):
    params = GenerationParams(bars=2, beam_width=4, count=3, key="C", avoid_repetition=False)
    g = gen.generate(params)
    assert len(g.melodies) == 3
    scores = [m.score for m in g.melodies]
    assert scores == sorted(scores, reverse=True)
    for m in g.melodies:
        TOK.validate(m.tokens)
        assert m.score == pytest.approx(masked_log_prob(gen, m.tokens, g.params), abs=1e-3)
    sampled = gen.generate(GenerationParams(bars=2, seed=4, key="C", avoid_repetition=False)).melodies[0]
    assert masked_log_prob(gen, sampled.tokens, g.params) <= scores[0] + 1e-4


def test_midi_reads_back_with_mido(gen):
    for m in gen.generate(GenerationParams(bars=4, seed=9, count=3, tempo=90)).melodies:
        midi = mido.MidiFile(file=io.BytesIO(m.midi_bytes()))
        ticks_per_step = midi.ticks_per_beat // TOK.steps_per_quarter
        onsets, now = [], 0
        for msg in mido.merge_tracks(midi.tracks):
            now += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                onsets.append((msg.note, now // ticks_per_step))
        assert onsets == [(n.pitch, n.start) for n in m.notes]
        assert any(msg.type == "set_tempo" and round(mido.tempo2bpm(msg.tempo)) == 90 for msg in midi.tracks[0])


def test_to_json_and_musicxml(gen):
    m = gen.generate(GenerationParams(bars=2, seed=1, tempo=60)).melodies[0]
    j = m.to_json()
    assert j["seed"] == 1 and j["model"] == "tiny" and j["bars"] == 2 and j["tokens"][0] == "BOS"
    assert [(n["pitch"], n["start_beats"] * 4) for n in j["notes"]] == [(n.pitch, n.start) for n in m.notes]
    assert j["notes"][0]["end_s"] == j["notes"][0]["end_beats"]  # 60 qpm: one beat per second
    assert b"<score-partwise" in m.musicxml_bytes()


def test_repetition_penalty_targets_the_repeated_pattern(gen):
    c, d, e = TOK.note_id(60), TOK.note_id(62), TOK.note_id(64)
    loop = torch.tensor([[c, d] * 16, [TOK.rest_id] * 32, [c, d, e, TOK.hold_id] * 8])
    penalty = gen.repetition_penalty(loop)
    assert penalty[0, c] < 0 and penalty[0, d] < 0 and penalty[0, e] == 0 and penalty[0, TOK.rest_id] == 0
    assert penalty[1, TOK.rest_id] < 0 and penalty[1, c] == 0
    assert not penalty[2].any()  # three pitches: no loop


@pytest.fixture(scope="module")
def lazy_checkpoint(tmp_path_factory):
    """A model that would rather rest, or hold its note, than play: the hard caps' worst case."""
    return biased_checkpoint(tmp_path_factory.mktemp("lazy") / "lazy.pt", TOK, -5.0,
                             {TOK.rest_id: 5.0, TOK.hold_id: 6.0})


def longest_runs(melody, bar_steps):
    """(longest silence, longest note) in grid steps, over the whole melody up to its last bar."""
    silence, until = 0, 0
    for n in melody.notes:
        silence, until = max(silence, n.start - until), max(until, n.end)
    silence = max(silence, TOK.bar_count(melody.tokens) * bar_steps - until)
    return silence, max((n.end - n.start for n in melody.notes), default=0)


@pytest.mark.parametrize("meter", ["4/4", "3/4", "6/8"])
def test_guard_keeps_silences_and_notes_within_two_bars(lazy_checkpoint, meter):
    lazy, S = Generator(lazy_checkpoint), TOK.bar_steps(meter)
    for beam in (1, 3):
        g = lazy.generate(GenerationParams(bars=8, seed=2, count=beam, beam_width=beam, meter=meter))
        for m in g.melodies:
            silence, longest = longest_runs(m, S)
            assert silence < 2 * S and longest <= 2 * S and len(m.notes) >= 2  # degenerate: > 2 bars
    # without the guard this model plays one long-held note and rests: the caps are what helps
    free = lazy.generate(GenerationParams(bars=8, seed=2, meter=meter, avoid_repetition=False,
                                         redraw_degenerate=False)).melodies[0]
    silence, longest = longest_runs(free, S)
    assert silence > 2 * S or longest > 2 * S


@pytest.mark.parametrize("field,value,message", [
    ("temperature", 9, "temperature must be null or in (0, 5], got 9"),
    ("temperature", 0, "temperature must be null or in (0, 5]"),
    ("bars", 0, "bars must be an integer in [1, 256], got 0"),
    ("top_k", -1, "top_k must be an integer >= 0"),
    ("top_p", 1.5, "top_p must be in (0, 1]"),
    ("count", 17, "count must be an integer in [1, 16]"),
    ("beam_width", 0, "beam_width must be an integer in [1, 16]"),
    ("key", "H", "key must be null or one of C, C#"),
    ("scale", "locrian", "scale must be null or one of major"),
    ("tempo", 10, "tempo must be in [20, 300]"),
    ("min_pitch", 10, "min_pitch must be null or an integer in [36, 96]"),
    ("meter", "5/7", "meter must be null or one of"),
    ("primer", [[60, -1, 1]], "primer[0] must be [pitch 0..127"),
    ("primer", b"not midi", "primer must be a melody the tokenizer can read"),
    ("seed", -1, "seed must be null or an integer"),
])
def test_bad_parameters_name_the_parameter_and_range(gen, field, value, message):
    with pytest.raises(ValueError) as err:
        gen.generate(GenerationParams(**{field: value}))
    assert message in str(err.value)
    assert isinstance(err.value, ParameterError) and err.value.field.startswith(field)


def test_combined_constraints_are_checked(gen):
    with pytest.raises(ValueError, match="key must be given when scale is given"):
        GenerationParams(scale="minor").validate()
    with pytest.raises(ValueError, match=r"max_pitch must be >= min_pitch \(70\), got 60"):
        GenerationParams(min_pitch=70, max_pitch=60).validate()
    with pytest.raises(ValueError, match="some C pentatonic_major pitch"):
        GenerationParams(key="C", scale="pentatonic_major", min_pitch=65, max_pitch=66).validate()
    with pytest.raises(ValueError, match="count must be at most beam_width"):
        GenerationParams(beam_width=2, count=3).validate()


def test_generate_melody_takes_a_dict_and_a_path(checkpoint):
    g = generate_melody({"bars": 2, "seed": 3}, model=checkpoint)
    assert g.model == "tiny" and len(g.melodies) == 1
    with pytest.raises(ValueError, match="colour must be one of bars"):
        generate_melody({"colour": "red"}, model=checkpoint)


def test_the_draw_follows_the_tempered_distribution(gen):
    # Gumbel-max sampling: frequencies over many seeded draws match softmax(logits / T)
    torch.manual_seed(0)
    logits = torch.randn(1, 8).repeat(40000, 1)
    params = GenerationParams(temperature=0.7)
    draws = gen.sample(logits, params, gen.gumbel((40000, 8), torch.Generator().manual_seed(1)))
    freq = torch.bincount(draws, minlength=8).double() / 40000
    torch.testing.assert_close(freq, torch.softmax(logits[0].double() / 0.7, -1), atol=0.01, rtol=0)
    nucleus = gen.sample(logits, GenerationParams(top_p=0.5), gen.gumbel((40000, 8), torch.Generator()))
    probs = torch.softmax(logits[0], -1)
    kept = torch.argsort(probs, descending=True)[:int((torch.sort(probs, descending=True).values.cumsum(0) < 0.5).sum()) + 1]
    assert set(nucleus.unique().tolist()) == set(kept.tolist())


@pytest.mark.parametrize("include", [True, False])
def test_meter_change_after_the_primer(gen, include):
    primer = TOK.decode_midi_bytes(TOK.encode_notes([Note(67, 0, 2), Note(65, 2, 12)], "3/4"))
    m = gen.generate(GenerationParams(bars=2, seed=2, primer=primer, meter="6/8", include_primer=include)).melodies[0]
    notes, meters = TOK.decode_notes(m.tokens)  # validates
    assert meters == ([(0, "3/4"), (1, "6/8")] if include else [(0, "6/8")])
    assert TOK.bar_count(m.tokens) == (3 if include else 2)
