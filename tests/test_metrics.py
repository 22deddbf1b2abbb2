"""Melody statistics on hand-made melodies whose answers are known."""
import math

import numpy as np
import pytest

from model.evaluation.metrics import (bits_per_note, compare_melodies, corpus_bits_per_note, count_notes, histogram_overlap, in_scale_ratio, interval_histogram, length_histogram, note_ids, pitch_bits, pitch_class_histogram)
from model.generation.quality import degenerate_reason
from model.representation.keys import estimate_key, scale_pitch_classes
from model.representation.tokens import MelodyTokenizer, Note

TOK = MelodyTokenizer()
BAR = 16  # 4/4 at 4 steps per quarter


def line(pitches, length=4, gap=0):
    """Consecutive notes of `length` steps each, `gap` rest steps after each."""
    return [Note(p, i * (length + gap), i * (length + gap) + length) for i, p in enumerate(pitches)]


C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]
# "Ode to joy"-like folk line: stepwise, varied rhythm, 4 bars
FOLK = [Note(64, 0, 4), Note(64, 4, 8), Note(65, 8, 12), Note(67, 12, 16), Note(67, 16, 20), Note(65, 20, 24),
        Note(64, 24, 28), Note(62, 28, 32), Note(60, 32, 36), Note(60, 36, 40), Note(62, 40, 44),
        Note(64, 44, 48), Note(64, 48, 54), Note(62, 54, 56), Note(62, 56, 64)]


def test_a_scale_is_entirely_in_scale_and_its_key_is_found():
    ids = TOK.encode_notes(line(C_MAJOR * 2), "4/4")
    assert in_scale_ratio(ids, TOK) == 1.0
    assert in_scale_ratio(line(C_MAJOR), key="C", scale="major") == 1.0
    assert in_scale_ratio(line(C_MAJOR), key="F#", scale="major") == pytest.approx(2 / 8)  # only F (= E#) and B
    tonic, mode, r = estimate_key(line([57, 59, 60, 62, 64, 65, 67, 69, 64, 60, 57], length=4))
    assert (tonic, mode) == (9, "minor") and r > 0.5       # an A-minor line opening and closing on A


def test_estimate_key_is_krumhansl_schmuckler_by_correlation():
    """The one-product form against the textbook one: np.corrcoef with each of the 24 rotated profiles."""
    from model.representation.keys import KK_MAJOR, KK_MINOR

    def reference(notes):
        """{(tonic, mode): r} of every key by np.corrcoef."""
        weights = np.zeros(12)
        for n in notes:
            weights[n.pitch % 12] += n.end - n.start
        return {(tonic, mode): float(np.corrcoef(weights, np.roll(profile, tonic))[0, 1])
                for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR)) for tonic in range(12)}

    rng = np.random.default_rng(0)
    for _ in range(2000):
        k = int(rng.integers(1, 40))
        pitches, lengths = rng.integers(48, 84, size=k), rng.integers(1, 9, size=k)
        notes, t = [], 0
        for p, d in zip(pitches.tolist(), lengths.tolist()):
            notes.append(Note(p, t, t + d))
            t += d
        rs, (tonic, mode, r) = reference(notes), estimate_key(notes)
        best = max(rs.values())
        assert r == pytest.approx(best, abs=1e-12)
        # the best key; where keys tie exactly (two pitch classes of equal weight), the first of them
        tied = [key for key, v in rs.items() if v > best - 1e-12]
        assert (tonic, mode) == tied[0]
    assert estimate_key([Note(p, 0, 1) for p in range(60, 72)]) == (0, "major", -1.0)  # flat: fits no key


def test_in_scale_ratio_counts_the_notes_outside():
    notes = line([60, 62, 64, 61, 67, 68, 72, 60])         # C# and G# are outside C major
    assert in_scale_ratio(notes, key="C", scale="major") == pytest.approx(6 / 8)
    assert scale_pitch_classes("Bb", "pentatonic_major") == frozenset({10, 0, 2, 5, 7})
    with pytest.raises(ValueError, match="scale must be one of"):
        in_scale_ratio(notes, key="C", scale="bogus")
    with pytest.raises(ValueError, match="key must be"):
        in_scale_ratio(notes, key="H", scale="major")
    assert math.isnan(in_scale_ratio([]))


def test_degenerate_melodies_are_recognised():
    two_note_loop = TOK.encode_notes(line([60, 62] * 8, length=2), "4/4")  # 16 notes x 2 steps = 2 bars
    assert degenerate_reason(two_note_loop, TOK) is None   # exactly two bars: not more than two
    longer_loop = TOK.encode_notes(line([60, 62] * 12, length=2), "4/4")   # 3 bars
    assert degenerate_reason(longer_loop, TOK).startswith("two-note loop")
    one_note = TOK.encode_notes(line([67] * 10, length=4), "4/4")          # 2.5 bars of G
    assert degenerate_reason(one_note, TOK).startswith("one note")
    held = TOK.encode_notes([Note(60, 0, 40)], "4/4")                     # one note held 2.5 bars
    assert degenerate_reason(held, TOK).startswith("one note")
    silence = TOK.encode_notes([], "4/4", bars=8)
    assert degenerate_reason(silence, TOK) == "silence: no notes"
    long_rest = TOK.encode_notes(FOLK[:4] + [Note(60, 16 + 3 * BAR, 16 + 3 * BAR + 4)], "4/4")
    assert degenerate_reason(long_rest, TOK).startswith("silence")
    trailing = TOK.encode_notes(FOLK, "4/4", bars=7)                       # 3 empty bars at the end
    assert degenerate_reason(trailing, TOK).startswith("silence")


def test_varied_tunes_are_not_degenerate():
    assert degenerate_reason(TOK.encode_notes(FOLK, "4/4"), TOK) is None
    assert degenerate_reason(TOK.encode_notes(FOLK, "4/4", bars=6), TOK) is None   # 2 empty bars: allowed
    three_note_loop = line([60, 62, 64] * 8, length=2)                     # a loop, but of three notes
    assert degenerate_reason(three_note_loop, bar_steps=BAR) is None
    reciting_tone = line([74] * 5 + [76, 77, 74, 72], length=8)          # 5 half notes of D: 2.5 bars
    assert degenerate_reason(reciting_tone, bar_steps=BAR) is None    # slow, and fewer than 8 repeats
    with pytest.raises(ValueError, match="bar_steps"):
        degenerate_reason(FOLK)                            # a note list has no meter


def test_histograms_and_overlap():
    notes = line([60, 64, 67, 72, 48])
    assert pitch_class_histogram(notes).tolist() == [3, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    iv = interval_histogram(notes)
    assert iv.sum() == 4 and iv[12 + 4] == 1 and iv[12 + 3] == 1 and iv[12 + 5] == 1 and iv[0] == 1  # -24 clipped
    lengths = length_histogram([Note(60, 0, 1), Note(62, 1, 5), Note(64, 5, 100)], max_length=8)
    assert lengths.tolist() == [1, 0, 0, 1, 0, 0, 0, 1]
    assert histogram_overlap([1, 1, 0], [2, 2, 0]) == pytest.approx(1.0)
    assert histogram_overlap([1, 0], [0, 1]) == 0.0
    assert histogram_overlap([3, 1], [1, 1]) == pytest.approx(0.75)
    assert histogram_overlap([0, 0], [1, 1]) == 0.0


def test_compare_melodies_against_a_reference():
    tunes = [TOK.encode_notes(FOLK, "4/4"), TOK.encode_notes(line(C_MAJOR), "4/4")]
    same = compare_melodies(tunes, tunes, TOK)
    assert same["pitch_class_overlap"] == pytest.approx(1.0) and same["length_overlap"] == pytest.approx(1.0)
    assert same["degenerate_share"] == 0.0
    loops = [TOK.encode_notes(line([61, 63] * 12, length=2), "4/4")]
    other = compare_melodies(loops, tunes, TOK)
    assert other["degenerate_share"] == 1.0 and other["pitch_class_overlap"] < 0.3


def test_bits_per_note_and_pitch_bits_with_known_distributions():
    ids = TOK.encode_notes(FOLK, "4/4")
    n = count_notes(ids, TOK)
    assert n == len(FOLK)
    logp = np.full(len(ids) - 1, math.log(0.5))            # every token predicted with p = 1/2
    assert bits_per_note(logp, ids, TOK) == pytest.approx((len(ids) - 1) / n)
    assert corpus_bits_per_note([(logp, ids), (logp, ids)], TOK) == pytest.approx((len(ids) - 1) / n)
    # uniform over the whole vocabulary: pitch bits = log2(number of pitches) at every onset
    uniform = np.full((len(ids) - 1, TOK.vocab_size), -math.log(TOK.vocab_size))
    bits = pitch_bits(uniform, ids, TOK)
    assert len(bits) == n and np.allclose(bits, math.log2(len(note_ids(TOK))))
    # all NOTE mass on the true pitch (plus mass on non-notes, which renormalising ignores): 0 bits
    sharp = np.full((len(ids) - 1, TOK.vocab_size), -50.0)
    sharp[np.arange(len(ids) - 1), ids[1:]] = 0.0
    sharp[:, TOK.hold_id] = 0.0
    assert np.allclose(pitch_bits(sharp, ids, TOK), 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="token_logprobs"):
        bits_per_note(logp[:-1], ids, TOK)
