"""The network's condition input at every token: the position in the bar, the bars remaining, the
tune's key, and (a network that has them) the bar's form, the chord and the tune's style.

``condition_ids`` packs them into one id per token (``NetworkConfig.condition_id``), for training,
scoring (``model.evaluation.report``) and generation (``model.generation.rows``) alike, so the three read the same
numbers. No torch here: it works on token ids and the tokenizer's grammar.

The **key** is what an ABC tune states in its header: a tonic and a mode. For a training tune it is
the Krumhansl-Schmuckler estimate of its notes (``tune_key``), as id tonic + 12 for minor (0..23;
24: unknown). Generation sets it from the requested key and scale, else from the primer's key
signature, else draws one from the training tunes' keys (``model.generation.sampling``), so the melody is
written in a key from its first note, as a folk tune is, and ends in it.

The **form**, **chord** and **style** of a training tune are its own labels
(``model.representation.tune_labels``, ``model.representation.styles``); generation sets them from
the request's form plan, chords and style (``model.generation.rows``). Any of them may be unknown.
"""
from __future__ import annotations

import numpy as np

MINOR_SCALES = ("minor", "harmonic_minor", "dorian", "phrygian", "pentatonic_minor")  # the minor key ids


def key_id(tonic_pc: int, scale: str | None = None) -> int:
    """The key id of a tonic pitch class and a scale (or mode: "major"/"minor"; None: major)."""
    return int(tonic_pc) % 12 + (12 if scale in MINOR_SCALES else 0)


def tune_key(tokenizer, ids) -> int | None:
    """The key id of a tune's notes (Krumhansl-Schmuckler), or None when it has no notes."""
    from model.representation.keys import estimate_key
    from model.representation.tokens import melody_notes
    notes, _, _ = melody_notes([int(t) for t in ids], tokenizer)
    if not notes:
        return None
    tonic, mode, _ = estimate_key(notes)
    return key_id(tonic, mode)


def condition_ids(tokenizer, ids, config, known_end: bool = True, key: int | None = None, *,
                  form=None, chords=None, style: int | None = None) -> list[int]:
    """The network's condition input at every index of ``ids`` (``NetworkConfig.condition_id``): the
    position in the bar of the next grid step, when ``known_end`` the bars remaining after token i
    (``MelodyTokenizer.bars_remaining``), else "unknown", the key id ``key``, per index the form's
    (relation, pointer) ``form`` and chord id ``chords`` (lists as long as ``ids``, items or lists
    None: unknown) and the style id ``style`` (None: unknown), for the inputs the network has."""
    positions = tokenizer.positions(ids)
    if all(width == 0 for name, width in config.input_parts() if name not in ("token", "position")):
        return positions  # the position alone: its id is the position
    remaining = tokenizer.bars_remaining(ids) if known_end and config.remaining_dim else [None] * len(positions)
    form = form or [None] * len(positions)
    chords = chords or [None] * len(positions)
    return [config.condition_id(p, r, key, *(f if f is not None else (None, None)), chord=c, style=style)
            for p, r, f, c in zip(positions, remaining, form, chords)]


TOLD_ALL = ("form", "chords", "style")  # the labels a training tune tells the network


def tune_positions(tokenizer, tokens: list[np.ndarray], config=None, known_end: bool = True,
                   known_key: bool = True, *, tune_ids: list[str] | None = None, told=TOLD_ALL,
                   harmony=None) -> list[np.ndarray]:
    """The network's condition input for every tune (see ``condition_ids``; config None: positions
    only); with ``known_key`` each tune's own key (``tune_key``), else "unknown"; of the labels named
    in ``told``, each tune's own form and chords (``model.representation.tune_labels``; chords by
    ``harmony``, default the shipped estimator) and its style from ``tune_ids`` (a tune whose
    collection has no style, or no ids: unknown); the rest unknown."""
    if config is None:
        return [np.asarray(tokenizer.positions(t), dtype=np.int64) for t in tokens]
    keys = [tune_key(tokenizer, t) if known_key and config.key_dim else None for t in tokens]
    styles = [tune_style(i, config) for i in tune_ids] if tune_ids is not None and "style" in told \
        else [None] * len(tokens)
    form_told, chords_told = config.form_dim and "form" in told, config.chord_dim and "chords" in told
    if not (form_told or chords_told):
        return [np.asarray(condition_ids(tokenizer, t, config, known_end, k, style=st), dtype=np.int64)
                for t, k, st in zip(tokens, keys, styles)]
    from model.representation.harmony import HarmonyModel
    from model.representation.tune_labels import chord_labels, form_labels, next_step_places
    harmony = harmony or (HarmonyModel.load() if chords_told else None)
    out = []
    for t, k, st in zip(tokens, keys, styles):
        places = next_step_places(t, tokenizer)
        form = form_labels(t, tokenizer, places) if form_told else None
        chords = chord_labels(t, tokenizer, harmony, places) if chords_told else None
        out.append(np.asarray(condition_ids(tokenizer, t, config, known_end, k, form=form, chords=chords, style=st),
                              dtype=np.int64))
    return out


def tune_style(tune_id: str, config) -> int | None:
    """A tune's style id among the network's styles (None: unknown, or no style input)."""
    if not config.style_dim:
        return None
    from model.representation.styles import style_of
    name = style_of(tune_id)
    return config.styles.index(name) if name in config.styles else None


def transpose_chords(chord_field: np.ndarray, semitones: int, unknown: int) -> np.ndarray:
    """Chord ids (root * 4 + quality; ``unknown`` stays) moved by ``semitones``, as the notes are."""
    moved = ((chord_field // 4 + int(semitones)) % 12) * 4 + chord_field % 4
    return np.where(chord_field < unknown, moved, chord_field)
