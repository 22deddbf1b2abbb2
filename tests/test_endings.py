"""Length ranges, the tonic cadence, the quality gate and ending statistics (model/generation/endings.py, model/generation/sampling.py)."""
import io

import mido
import pretty_midi
import pytest
import torch

from model.network.checkpoint import save_checkpoint
from model.generation.endings import beat_steps, ending_statistics, ends_in_cadence, strong_positions
from model.generation.quality import degenerate_reason
from model.representation.keys import estimate_key
from model.network.melody import MelodyNetwork, NetworkConfig
from model.generation.params import GenerationParams, ParameterError
from model.generation.sampling import Generator, derived_seed
from model.representation.tokens import MelodyTokenizer, Note
from support import alone_and_batched, biased_checkpoint

TOK = MelodyTokenizer()


@pytest.fixture(scope="module", params=["positions", "remaining"])
def gen(request, tmp_path_factory):
    torch.manual_seed(0)
    extra = {"remaining_dim": 3, "max_remaining": 4} if request.param == "remaining" else {}
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=24, embedding_dim=8, num_layers=2,
                                      position_dim=4, max_positions=TOK.max_bar_steps, **extra))
    with torch.no_grad():  # an untrained model that ends now and then at a barline
        net.projection.bias[TOK.eos_id] = 1.5
    return Generator(save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", net, TOK))


def bars_of(melody):
    return TOK.bar_count(melody.tokens)


def test_a_range_ends_at_a_barline_inside_it(gen):
    lengths = set()
    for seed in range(12):
        g = gen.generate(GenerationParams(min_bars=3, max_bars=9, seed=seed, count=3))
        for m in g.melodies:
            TOK.validate(m.tokens)
            assert 3 <= bars_of(m) <= 9 and m.tokens[-1] == TOK.eos_id
            assert m.tokens[-2] != TOK.bar_id  # EOS follows a complete bar
            lengths.add(bars_of(m))
    assert len(lengths) >= 3  # the model, not the request, chose where to end


def test_exact_bars_stay_exact(gen):
    for seed in range(5):
        assert all(bars_of(m) == 6 for m in gen.generate(GenerationParams(bars=6, seed=seed, count=2)).melodies)


def final_note_cadences(melody, tonic_pc, rings: bool = True):
    """The cadence rule read off the decoded notes, independently of the masks; ``rings``: and the
    final tonic is held to the barline (what the masks give the template's last bar)."""
    notes = melody.notes
    S = TOK.bar_steps(melody.meter)
    total = sum(1 for t in melody.tokens if TOK.is_step(t))
    last = notes[-1]
    bar_start = total - S
    return (last.pitch % 12 == tonic_pc and last.start >= bar_start
            and last.start - bar_start in strong_positions(melody.meter, 4, S)
            and last.end - last.start >= beat_steps(melody.meter, 4)
            and (not rings or last.end == total))


@pytest.mark.parametrize("meter", ["4/4", "3/4", "6/8", "2/4"])
@pytest.mark.parametrize("key", ["D", "G", "F"])
def test_cadence_holds_for_every_sampled_melody(gen, meter, key):
    tonic = {"D": 2, "G": 7, "F": 5}[key]
    g = gen.generate(GenerationParams(bars=4, seed=3, count=8, meter=meter, key=key, cadence="tonic",
                                      temperature=1.5))
    assert all(final_note_cadences(m, tonic) for m in g.melodies)


def test_cadence_holds_for_beam_search_and_ranges(gen):
    for params in (GenerationParams(bars=4, seed=1, beam_width=4, count=4, key="A", cadence="tonic"),
                   GenerationParams(min_bars=2, max_bars=6, seed=5, count=6, key="A", cadence="tonic"),
                   GenerationParams(min_bars=2, max_bars=5, seed=6, beam_width=3, count=2, key="A", cadence="tonic")):
        for m in gen.generate(params).melodies:
            # a range that ended before its maximum ended after a bar meeting the rule (rest allowed after
            # a beat); the template's last bar rings to the barline
            ended_early = params.ranged and bars_of(m) < params.max_bars
            assert final_note_cadences(m, 9, rings=not ended_early), m.tokens


def test_cadence_without_a_key_ends_on_the_estimated_tonic(gen):
    g = gen.generate(GenerationParams(bars=4, seed=11, count=6, cadence="tonic"))
    for m in g.melodies:
        # the tonic is estimated from the notes before the last bar
        before = [n for n in m.notes if n.start < 3 * TOK.bar_steps("4/4")]
        assert final_note_cadences(m, estimate_key(before)[0])


def test_without_cadence_the_untrained_model_often_misses_it(gen):
    g = gen.generate(GenerationParams(bars=4, seed=3, count=8, key="D", temperature=1.5))
    assert not all(final_note_cadences(m, 2) for m in g.melodies)


def test_ends_in_cadence_reads_a_bar():
    d, e, hold, rest = TOK.note_id(62), TOK.note_id(64), TOK.hold_id, TOK.rest_id
    assert ends_in_cadence([e, hold, hold, hold] * 2 + [d] + [hold] * 3 + [rest] * 4, TOK, 2, "4/4")
    assert not ends_in_cadence([e] * 8 + [d, hold, e, hold] + [rest] * 4, TOK, 2, "4/4")  # last note E
    assert not ends_in_cadence([e] * 9 + [d, hold, hold, hold] + [rest] * 3, TOK, 2, "4/4")  # weak beat


def test_cadence_needs_a_tonic_in_range():
    with pytest.raises(ParameterError, match="max_pitch"):
        GenerationParams(key="D", cadence="tonic", min_pitch=63, max_pitch=70).validate(TOK)


@pytest.fixture(scope="module")
def lazy(tmp_path_factory):
    """A model that would rather rest than play: most of its raw draws are degenerate."""
    return Generator(biased_checkpoint(tmp_path_factory.mktemp("lazy") / "lazy.pt", TOK, -3.0, {TOK.rest_id: 3.5}))


def test_gate_never_returns_a_degenerate_melody_and_is_deterministic(lazy):
    raw = lazy.generate(GenerationParams(bars=8, seed=4, count=8, avoid_repetition=False, redraw_degenerate=False))
    assert sum(degenerate_reason(m.tokens, TOK) is not None for m in raw.melodies) >= 2  # the gate has work
    p = GenerationParams(bars=8, seed=4, count=8, avoid_repetition=False)
    a, b = lazy.generate(p), lazy.generate(p)
    assert all(degenerate_reason(m.tokens, TOK) is None for m in a.melodies)
    assert [m.midi_bytes() for m in a.melodies] == [m.midi_bytes() for m in b.melodies]
    assert a.to_json()["redrawn"] >= 2 and a.to_json()["redrawn"] == sum(m.info["redrawn"] for m in a.melodies)
    # a melody that passed is the same draw as without the gate
    for m, r in zip(a.melodies, raw.melodies):
        if m.info["redrawn"] == 0:
            assert m.tokens == r.tokens
    assert derived_seed(4, 0, 1) != derived_seed(4, 1, 1) != derived_seed(4, 0, 2)


def primer_midi(qpm, key=None):
    pm = pretty_midi.PrettyMIDI(initial_tempo=qpm)
    inst = pretty_midi.Instrument(0)
    spb = 60 / qpm
    for i, p in enumerate([62, 64, 66, 67]):
        inst.notes.append(pretty_midi.Note(90, p, i * spb, (i + 1) * spb))
    pm.instruments.append(inst)
    if key is not None:
        pm.key_signature_changes.append(pretty_midi.KeySignature(key, 0))
    pm.time_signature_changes.append(pretty_midi.TimeSignature(3, 4, 0))
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def midi_tempo(data):
    f = mido.MidiFile(file=io.BytesIO(data))
    return next(mido.tempo2bpm(m.tempo) for t in f.tracks for m in t if m.type == "set_tempo")


def test_continuation_keeps_the_primers_tempo_and_meter_unless_set(gen):
    g = gen.generate(GenerationParams(bars=2, seed=1, primer=primer_midi(144)))
    assert g.params.tempo == pytest.approx(144) and g.melodies[0].meter == "3/4"
    assert midi_tempo(g.melodies[0].midi_bytes()) == pytest.approx(144, abs=0.01)
    g = gen.generate(GenerationParams(bars=2, seed=1, primer=primer_midi(144), tempo=90, meter="4/4"))
    assert g.params.tempo == 90 and g.melodies[0].meter == "4/4"
    assert gen.generate(GenerationParams(bars=2, seed=1)).params.tempo == 120


def test_cadence_takes_the_primers_key_signature(gen):
    g = gen.generate(GenerationParams(bars=3, seed=2, count=4, primer=primer_midi(100, key=7), cadence="tonic",
                                      include_primer=False))
    assert all(final_note_cadences(m, 7) for m in g.melodies)  # G major's tonic


def test_ending_statistics_of_known_tunes():
    d, e = 62, 64
    tonic_long = TOK.encode_notes([Note(d, 0, 4), Note(e, 4, 8), Note(66, 8, 12), Note(d, 16, 32)], "4/4")
    short_off = TOK.encode_notes([Note(d, 0, 8), Note(d, 8, 16), Note(e, 16, 20), Note(e, 21, 22)], "4/4")
    stats = ending_statistics([tonic_long, short_off], TOK)
    assert stats["tunes"] == 2
    assert stats["final_longer_than_beat_share"] == 0.5
    assert stats["final_on_strong_beat_share"] == 0.5
    assert stats["final_length_beats"] == pytest.approx((4 + 0.25) / 2)
    assert stats["tonic_share"] == 0.5


def test_gate_covers_beam_search(lazy):
    p = GenerationParams(bars=8, seed=2, count=3, beam_width=3, avoid_repetition=False)
    a = lazy.generate(p)
    assert all(degenerate_reason(m.tokens, TOK) is None for m in a.melodies)
    assert [m.tokens for m in a.melodies] == [m.tokens for m in lazy.generate(p).melodies]


@pytest.mark.parametrize("primer", [None, [[60, 0, 1], [62, 1, 1], [64, 2, 4]]])
def test_bars_remaining_input_counts_down_to_zero_at_eos_after_a_primer(primer, tmp_path):
    from model.generation.rows import MelodyRows
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=8, embedding_dim=4, num_layers=1,
                                      position_dim=4, max_positions=TOK.max_bar_steps, remaining_dim=2,
                                      max_remaining=16))
    g = Generator(save_checkpoint(tmp_path / "r.pt", net, TOK))
    params = GenerationParams(bars=5, seed=1, primer=primer, meter="3/4")
    plan = g.plan(params)
    rows = MelodyRows(g, *next(plan))
    P = len(rows.prefix.ids)
    remaining = [c // net.config.max_positions for c in rows.positions]
    assert remaining[-1] == 0 and rows.full[-1] == TOK.eos_id
    bars = [i for i in range(P, len(rows.full)) if rows.full[i] == TOK.bar_id]
    assert len(bars) == 5
    # from the first generated barline on, the count runs 4, 3, 2, 1, 0 (the generated bars that follow)
    assert [remaining[i] for i in bars] == [4, 3, 2, 1, 0]
    assert all(remaining[i] == 0 for i in range(bars[-1], len(rows.full)))
    # a length range reads the end as unknown until its last possible bar, which is the last for
    # certain (EOS is forced after it): from that bar's barline on the count reads 0
    ranged = MelodyRows(g, *next(g.plan(GenerationParams(min_bars=2, max_bars=5, seed=1, primer=primer))))
    remaining = [c // net.config.max_positions for c in ranged.positions]
    last_barline = max(i for i in range(P, len(ranged.full)) if ranged.full[i] in (TOK.bar_id, -2))  # -2: DECIDE
    assert sum(1 for i in range(P, len(ranged.full)) if ranged.full[i] in (TOK.bar_id, -2)) == 5
    assert set(remaining[:last_barline]) == {net.config.unknown_remaining}
    assert set(remaining[last_barline:]) == {0}


# ---- the key input: which key the network is told ------------------------------------------------

@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A tiny network with a key input and a prior that favours two keys."""
    from model.network.checkpoint import save_checkpoint
    from model.network.melody import MelodyNetwork, NetworkConfig
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=16, embedding_dim=8, num_layers=1,
                                      position_dim=4, max_positions=TOK.max_bar_steps, remaining_dim=3,
                                      key_dim=4))
    prior = [0.0] * 24
    prior[7], prior[21] = 0.75, 0.25  # G major, A minor
    return Generator(save_checkpoint(tmp_path_factory.mktemp("keyed") / "keyed.pt", net, TOK, key_prior=prior))


def test_the_network_is_told_the_requested_the_primers_or_a_drawn_key(keyed):
    from model.generation.rows import melody_key
    from model.generation.sampling import Prefix
    bare = Prefix(TOK.start_ids("4/4"), "4/4")
    key = lambda **kw: melody_key(keyed, GenerationParams(**kw), kw.pop("prefix", bare), kw.get("seed", 0))  # noqa: E731
    assert key(key="D") == 2 and key(key="D", scale="dorian") == 14 and key(key="Bb", scale="minor") == 22
    signed = keyed.prefix(GenerationParams(primer=primer_midi(120, key=16)))   # pretty_midi 16: E minor
    assert melody_key(keyed, GenerationParams(primer=primer_midi(120, key=16)), signed, 0) == 16
    unsigned = keyed.prefix(GenerationParams(primer=primer_midi(120)))
    assert melody_key(keyed, GenerationParams(primer=primer_midi(120)), unsigned, 0) is None  # read from the notes
    drawn = [melody_key(keyed, GenerationParams(seed=s), bare, s) for s in range(200)]
    assert set(drawn) == {7, 21} and 100 < drawn.count(7) < 190           # from the prior, by seed
    assert drawn == [melody_key(keyed, GenerationParams(seed=s), bare, s) for s in range(200)]


def test_a_keyed_network_gives_the_same_bytes_alone_and_in_a_batch(keyed):
    requests = [GenerationParams(bars=4, seed=s, **kw) for s, kw in
                enumerate([{}, {"key": "D"}, {"count": 3}, {"primer": primer_midi(100, key=3)}, {"min_bars": 2, "max_bars": 5}])]
    alone, together = alone_and_batched(keyed, requests)
    assert together == alone


def test_tonic_pull_adds_its_nats_to_the_tonic_at_the_cadence_points_only():
    from model.generation.endings import TonicPull, cadence_point, pitch_class_columns
    pull = TonicPull(TOK, "4/4", 2.5, pitch_class_columns(TOK))
    assert pull.bias(0) is None  # nothing before the last bar begins
    pull.begin_bar([2, None])    # row 0's tonic is D; row 1 has none (no notes yet)
    feasible, _ = cadence_point("4/4", 4, 16)
    d_notes = [TOK.note_id(p) for p in range(TOK.config.min_pitch, TOK.config.max_pitch + 1) if p % 12 == 2]
    for p in range(16):
        bias = pull.bias(p)
        if p not in feasible:
            assert bias is None
            continue
        assert bias[0, d_notes].eq(2.5).all() and float(bias[0].sum()) == 2.5 * len(d_notes)
        assert bias[1].eq(0).all()


def test_a_tonic_begun_at_a_cadence_point_is_held_with_the_pull_on_hold():
    from model.generation.endings import TonicPull, pitch_class_columns
    pull = TonicPull(TOK, "4/4", 3.0, pitch_class_columns(TOK))
    pull.begin_bar([2, 2, 2])
    d, e = TOK.note_id(62), TOK.note_id(64)
    pull.advance(7, [e, e, e])
    pull.advance(8, [d, e, TOK.rest_id])    # only row 0 starts the tonic at the cadence point (8)
    ring = pull.bias(9)
    assert float(ring[0, TOK.hold_id]) == 3.0 and float(ring[0].sum()) == 3.0
    assert ring[1:].eq(0).all()
    pull.advance(9, [TOK.hold_id, TOK.hold_id, d])  # held; a tonic off the cadence points does not ring
    assert float(pull.bias(10)[0, TOK.hold_id]) == 3.0 and pull.bias(10)[1:].eq(0).all()
    pull.advance(10, [e, TOK.hold_id, TOK.hold_id])  # a new note ends the ring
    assert pull.bias(11) is None


def test_tonic_pull_leans_the_last_bars_strong_beats_towards_the_tonic(gen):
    from model.generation.endings import cadence_point

    def tonic_share_at_cadence_points(pull):
        tonic = onsets = 0
        for seed in range(6):
            for m in gen.generate(GenerationParams(bars=3, seed=seed, count=8, key="D", tonic_pull=pull)).melodies:
                S = TOK.bar_steps(m.meter)
                feasible, _ = cadence_point(m.meter, 4, S)
                for n in m.notes:
                    if n.start >= 2 * S and n.start - 2 * S in feasible:
                        onsets += 1
                        tonic += n.pitch % 12 == 2
        return tonic / onsets

    free, pulled = tonic_share_at_cadence_points(0.0), tonic_share_at_cadence_points(10.0)
    assert free < 0.5 and pulled > 0.9


def test_tonic_pull_favours_ending_a_range_after_a_bar_that_cadences(gen):
    from model.generation.rows import Draw, MelodyRows
    params = GenerationParams(min_bars=1, max_bars=4, seed=0, count=2, key="D", tonic_pull=3.0)
    params.validate(TOK)
    params.scale = "major"
    rows = MelodyRows(gen, *Draw(params, gen.prefix(params), 2, 0, 2))
    S, d, e, hold = 16, TOK.note_id(62), TOK.note_id(64), TOK.hold_id
    cadenced = [e, hold, hold, hold] * 2 + [d] + [hold] * 7  # D on the half bar, held to the barline
    not_cadenced = [e, hold, hold, hold] * 2 + [d, hold, e, hold] + [hold] * 4  # last note E
    rows.out[0, rows.step_cols[:S]] = torch.tensor(cadenced)
    rows.out[1, rows.step_cols[:S]] = torch.tensor(not_cadenced)
    rows.done_steps = S
    bias = rows._decide_bias()
    assert float(bias[0, TOK.eos_id]) == 3.0 and float(bias[1, TOK.eos_id]) == 0.0
    assert float(bias[0, TOK.bar_id]) == float(bias[1, TOK.bar_id]) == 0.0


def test_a_required_cadence_is_the_same_whatever_the_pull(gen):
    for pull in (0.0, 7.0):
        g = gen.generate(GenerationParams(bars=4, seed=5, count=4, key="G", cadence="tonic", tonic_pull=pull))
        if pull == 0.0:
            first = [m.tokens for m in g.melodies]
        assert [m.tokens for m in g.melodies] == first


def test_tonic_pull_is_checked():
    for bad in (-0.5, 10.5, float("nan"), True, "4"):
        with pytest.raises(ParameterError, match="tonic_pull"):
            GenerationParams(tonic_pull=bad).validate(TOK)


def test_the_key_so_far_is_the_estimate_of_the_notes_so_far(gen):
    """rows.sounding_tonic (step codes, no Note objects) against estimate_key of the notes read off the
    step tokens one by one, on generated melodies cut anywhere, with and without a primer (whose last
    note is held into the melody)."""
    import numpy as np
    from model.generation.rows import sounding_tonic

    def notes_of(steps):
        notes, start, pitch = [], 0, None
        for j, t in enumerate(steps):
            if t != TOK.hold_id and pitch is not None:
                notes.append(Note(pitch, start, j))
                pitch = None
            if TOK.pitch_of(t) is not None:
                pitch, start = TOK.pitch_of(t), j
        return notes + ([Note(pitch, start, len(steps))] if pitch is not None else [])

    held = [[60, 0, 1], [62, 1, 1], [67, 2, 6]]  # its G is held across the barline
    checked = 0
    for params in (GenerationParams(bars=3, seed=2, count=8), GenerationParams(bars=2, seed=3, count=8, primer=held),
                   GenerationParams(bars=2, seed=4, count=8, meter="6/8", temperature=2.0)):
        for m in gen.generate(params).melodies:
            for cut in range(3, len(m.tokens) + 1, 5):
                notes = notes_of([t for t in m.tokens[:cut] if TOK.is_step(t)])
                want = estimate_key(notes)[0] if notes else None
                assert sounding_tonic(gen.step_codes[np.array(m.tokens[:cut])]) == want
                checked += want is not None
    assert checked > 100
