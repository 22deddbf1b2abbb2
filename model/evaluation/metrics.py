"""Melody statistics: how well a model predicts notes, and how its melodies compare with real ones.

Pure functions on token ids (with a `MelodyTokenizer`) or on grid notes (`model.representation.tokens.Note`).

Prediction (the same for the network and the n-gram model, given per-token log-probabilities):
- bits per note: a tune's total negative log-likelihood in bits over its number of notes, so models
  on different tokenizations compare; over a corpus, total bits over total notes.
- pitch bits per note: at each note onset, -log2 of the probability of the true NOTE_p renormalised
  over all NOTE tokens (the question "which pitch?", as in IDyOM-style pitch prediction).

Melody statistics:
- histograms of pitch class (12 bins), melodic interval (25 bins, semitones clipped to -12..+12)
  and note length (grid steps 1..max_length, longer ones in the last bin); their overlap is the sum
  of the bin-wise minimum of the two normalised histograms (1 = identical, 0 = disjoint).
- in-scale ratio: the share of notes whose pitch class lies in the requested key and scale, or, when
  none is given, in the diatonic scale (major or natural minor) of the tune's best-fitting key by
  Krumhansl-Schmuckler (duration-weighted pitch classes correlated with the Krumhansl-Kessler profiles).
- degenerate melodies, by this rule (`degenerate_reason`), with B = 2 bars of the tune's first meter:
  1. silence: no notes at all, or more than B grid steps in a row with no note sounding (before the
     first note, between notes, or after the last one up to the end of the tune);
  2. one note: a single note held for more than B steps, or a run of at least 8 consecutive onsets
     of one pitch spanning more than B steps (from the first onset to the last note's end);
  3. a two-note loop: a run of at least 8 consecutive onsets alternating between two pitches
     (p[i] == p[i-2] throughout, i.e. the pair repeated 4 times) spanning more than B steps.
  Rhythm is ignored. The 8-onset minimum keeps slow real tunes (a reciting tone in half notes) out:
  on 311 Essen tunes (altdeu10) 1.6% match, against 10.6% with no minimum; `compare_melodies`
  reports the reference split's share beside the generated one for this reason.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from model.generation.quality import degenerate_notes
from model.representation.keys import estimate_key, scale_pitch_classes 
from model.representation.tokens import Note, melody_notes

LN2 = math.log(2)
INTERVAL_CLIP = 12
MAX_LENGTH = 32




def count_notes(tokens: Sequence[int], tokenizer) -> int:
    """Number of note onsets (NOTE_p tokens) in a token sequence."""
    return sum(1 for t in tokens if tokenizer.pitch_of(int(t)) is not None)


# ---- prediction ----------------------------------------------------------------------------------
def bits_per_note(token_logprobs: Sequence[float], tokens: Sequence[int], tokenizer) -> float:
    """Total NLL of a tune in bits over its notes; `token_logprobs` are the natural-log probabilities
    of tokens[1:] (every predicted token). NaN for a tune without notes."""
    if len(token_logprobs) != len(tokens) - 1:
        raise ValueError(f"token_logprobs must hold len(tokens) - 1 = {len(tokens) - 1} values, "
                         f"got {len(token_logprobs)}")
    notes = count_notes(tokens, tokenizer)
    return -float(np.sum(token_logprobs)) / LN2 / notes if notes else math.nan


def corpus_bits_per_note(scored: Iterable[tuple[Sequence[float], Sequence[int]]], tokenizer) -> float:
    """Total bits over total notes for (token_logprobs, tokens) pairs."""
    bits, notes = 0.0, 0
    for logprobs, tokens in scored:
        bits -= float(np.sum(logprobs)) / LN2
        notes += count_notes(tokens, tokenizer)
    if notes == 0:
        raise ValueError("the tunes hold no notes: bits per note is undefined")
    return bits / notes


def note_ids(tokenizer) -> np.ndarray:
    """Ids of every NOTE_p token."""
    return np.array([i for i in range(tokenizer.vocab_size) if tokenizer.pitch_of(i) is not None])


def pitch_bits(log_probs: np.ndarray, tokens: Sequence[int], tokenizer) -> np.ndarray:
    """Bits of each note's pitch: -log2 p(NOTE_true) / sum over NOTE_q p(NOTE_q), one value per onset.

    `log_probs` (len(tokens) - 1, vocab) holds natural-log next-token distributions; row j predicts
    token j + 1. Only the pitch is scored: the choice "a note starts here" is left out."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.int64)
    if log_probs.ndim != 2 or len(log_probs) != len(tokens) - 1:
        raise ValueError(f"log_probs must have shape (len(tokens) - 1, vocab) = ({len(tokens) - 1}, V), "
                         f"got {log_probs.shape}")
    notes = note_ids(tokenizer)
    onsets = np.nonzero(np.isin(tokens[1:], notes))[0]     # rows predicting a NOTE token
    rows = log_probs[onsets][:, notes]                     # (n_onsets, n_pitches)
    peak = rows.max(axis=1, keepdims=True)
    log_norm = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1))  # log of the NOTE mass
    true = log_probs[onsets, tokens[1:][onsets]]
    return (log_norm - true) / LN2


# ---- histograms ------------------------------------------------------------------------------------
def pitch_class_histogram(notes: Sequence[Note]) -> np.ndarray:
    return np.bincount([n.pitch % 12 for n in notes], minlength=12).astype(np.float64)


def interval_histogram(notes: Sequence[Note]) -> np.ndarray:
    """Semitone steps between consecutive notes (rests ignored), clipped to +-12; bin 12 = unison."""
    steps = np.diff([n.pitch for n in notes]) if len(notes) > 1 else np.zeros(0, dtype=np.int64)
    clipped = np.clip(steps, -INTERVAL_CLIP, INTERVAL_CLIP) + INTERVAL_CLIP
    return np.bincount(clipped.astype(np.int64), minlength=2 * INTERVAL_CLIP + 1).astype(np.float64)


def length_histogram(notes: Sequence[Note], max_length: int = MAX_LENGTH) -> np.ndarray:
    """Note lengths in grid steps; bin i holds length i + 1, the last bin every length >= max_length."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1 grid step, got {max_length}")
    lengths = np.clip([n.end - n.start for n in notes], 1, max_length) - 1 if notes else np.zeros(0)
    return np.bincount(np.asarray(lengths, dtype=np.int64), minlength=max_length).astype(np.float64)


def histogram_overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Sum of the bin-wise minimum of the two histograms after normalising each to sum 1; 0 if either is empty."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"histograms must have the same bins, got {a.shape} and {b.shape}")
    if a.sum() <= 0 or b.sum() <= 0:
        return 0.0
    return float(np.minimum(a / a.sum(), b / b.sum()).sum())












def in_scale_ratio(melody, tokenizer=None, key: str | int | None = None, scale: str | None = None) -> float:
    """Share of notes in the given key and scale, or in the best-fitting major/minor key. NaN if no notes."""
    notes, _, _ = melody_notes(melody, tokenizer)
    if not notes:
        return math.nan
    if scale is None:
        if key is not None:
            raise ValueError("scale is required when key is given")
        tonic, mode, _ = estimate_key(notes)
        allowed = scale_pitch_classes(tonic, mode)
    else:
        allowed = scale_pitch_classes(0 if key is None else key, scale)
    return sum(1 for n in notes if n.pitch % 12 in allowed) / len(notes)






# ---- a set of melodies against a reference set --------------------------------------------------
def melody_statistics(melodies: Iterable, tokenizer=None, max_length: int = MAX_LENGTH,
                      bar_steps: int | None = None, key: str | int | None = None, scale: str | None = None) -> dict:
    """Summed histograms, mean in-scale ratio (in key+scale when given) and degenerate share of a set of melodies."""
    pc, iv, ln = np.zeros(12), np.zeros(2 * INTERVAL_CLIP + 1), np.zeros(max_length)
    ratios, degenerate, count = [], 0, 0
    for m in melodies:
        notes, total, first_bar = melody_notes(m, tokenizer)
        pc += pitch_class_histogram(notes)
        iv += interval_histogram(notes)
        ln += length_histogram(notes, max_length)
        if notes:
            ratios.append(in_scale_ratio(notes, key=key, scale=scale))
        degenerate += degenerate_notes(notes, total, bar_steps or first_bar) is not None
        count += 1
    if count == 0:
        raise ValueError("melodies must not be empty")
    return {"melodies": count, "pitch_class": pc, "interval": iv, "length": ln,
            "in_scale_ratio": float(np.mean(ratios)) if ratios else math.nan,
            "degenerate_share": degenerate / count}


def compare_melodies(generated: Iterable, reference: Iterable, tokenizer=None, max_length: int = MAX_LENGTH,
                     bar_steps: int | None = None, key: str | int | None = None, scale: str | None = None) -> dict:
    """Histogram overlaps of generated against reference melodies, and both sets' scale/degenerate figures.
    `key`/`scale`: the constraint the melodies were generated with (their in-scale ratio is then measured
    against it; the reference's always against each tune's estimated key)."""
    gen = melody_statistics(generated, tokenizer, max_length, bar_steps, key, scale)
    ref = melody_statistics(reference, tokenizer, max_length, bar_steps)
    return {
        "melodies": gen["melodies"], "reference_melodies": ref["melodies"],
        "pitch_class_overlap": histogram_overlap(gen["pitch_class"], ref["pitch_class"]),
        "interval_overlap": histogram_overlap(gen["interval"], ref["interval"]),
        "length_overlap": histogram_overlap(gen["length"], ref["length"]),
        "in_scale_ratio": gen["in_scale_ratio"], "reference_in_scale_ratio": ref["in_scale_ratio"],
        "degenerate_share": gen["degenerate_share"], "reference_degenerate_share": ref["degenerate_share"],
    }
