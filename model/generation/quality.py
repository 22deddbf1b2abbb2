"""The quality gate's rule: when a melody is degenerate (long silence, one note, a two-note loop).

The rule is spelled out in ``model.evaluation.metrics``'s docstring, which measures the same share
on real tunes; generation redraws a melody this rule rejects (``MAX_REDRAWS`` times at most).
"""
from __future__ import annotations

from model.representation.tokens import Note, melody_notes

MIN_LOOP_NOTES = 8  # a loop is a pattern repeated: one pitch 8 times, or two pitches alternating 4 times


# ---- degenerate melodies -----------------------------------------------------------------------
def degenerate_reason(melody, tokenizer=None, bar_steps: int | None = None) -> str | None:
    """Why a melody is degenerate by the rule in the module docstring, or None when it is not.

    `bar_steps` overrides the bar length (needed for a note list: it has no meter)."""
    notes, total, first_bar = melody_notes(melody, tokenizer)
    return degenerate_notes(notes, total, bar_steps or first_bar)


def degenerate_notes(notes: list[Note], total: int, bar_steps: int | None) -> str | None:
    if bar_steps is None or bar_steps < 1:
        raise ValueError(f"bar_steps must be a positive number of grid steps, got {bar_steps}")
    limit = 2 * bar_steps
    if not notes:
        return "silence: no notes"
    sounding_until = 0
    for n in notes:                                       # gaps with no note sounding
        if n.start - sounding_until > limit:
            return f"silence: {n.start - sounding_until} steps without a note"
        sounding_until = max(sounding_until, n.end)
    if total - sounding_until > limit:
        return f"silence: {total - sounding_until} steps without a note at the end"
    for n in notes:
        if n.end - n.start > limit:
            return f"one note: pitch {n.pitch} held for {n.end - n.start} steps"
    pitches = [n.pitch for n in notes]
    for period, name in ((1, "one note"), (2, "two-note loop")):
        run = 0                                           # first note of the current periodic run
        for i in range(len(notes)):
            if i >= period and pitches[i] != pitches[i - period]:
                run = i - period + 1
            span = notes[i].end - notes[run].start
            if i - run + 1 >= MIN_LOOP_NOTES and span > limit:
                pattern = "/".join(str(p) for p in pitches[run:run + period])
                return f"{name}: {pattern} repeated over {i - run + 1} notes, {span} steps"
    return None
