"""Keys and scales: the names generation accepts, and the key a melody is in.

``PITCH_CLASSES`` and ``SCALES`` are the only definition of the key and scale names (the request
checks in ``model.generation.params`` and the service read them here). ``estimate_key`` is
Krumhansl-Schmuckler: duration-weighted pitch classes correlated with the Krumhansl-Kessler profiles.
Nothing here imports torch.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from model.representation.tokens import Note

PITCH_CLASSES = {"C": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "F": 5, "F#": 6, "Gb": 6,
                 "G": 7, "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11}
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10), "lydian": (0, 2, 4, 6, 7, 9, 11),
    "phrygian": (0, 1, 3, 5, 7, 8, 10), "pentatonic_major": (0, 2, 4, 7, 9), "pentatonic_minor": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10), "chromatic": tuple(range(12)),
}


# Krumhansl & Kessler (1982) key profiles, tonic first
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


# ---- keys and scales -------------------------------------------------------------------------------
def parse_key(key: str | int) -> int:
    """'C', 'F#', 'Bb' (or a pitch class 0..11) -> pitch class."""
    if isinstance(key, (int, np.integer)):
        if not 0 <= key < 12:
            raise ValueError(f"key must be a pitch class in [0, 11] or a name like C, F#, Bb, got {key}")
        return int(key)
    if key not in PITCH_CLASSES:
        raise ValueError(f"key must be one of {', '.join(PITCH_CLASSES)}, got {key!r}")
    return PITCH_CLASSES[key]


def scale_pitch_classes(key: str | int, scale: str) -> frozenset[int]:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    tonic = parse_key(key)
    return frozenset((tonic + s) % 12 for s in SCALES[scale])


# the 24 key profiles (major tonics 0..11, then minor), centred and scaled to unit length, so that one
# matrix product gives every key's Pearson correlation with a histogram
_KEY_PROFILES = np.array([np.roll(p, t) for p in (KK_MAJOR, KK_MINOR) for t in range(12)])  # (24, 12)
_KEY_PROFILES = _KEY_PROFILES - _KEY_PROFILES.mean(1, keepdims=True)
_KEY_PROFILES /= np.sqrt((_KEY_PROFILES ** 2).sum(1, keepdims=True))


def estimate_key(notes: Sequence[Note]) -> tuple[int, str, float]:
    """Krumhansl-Schmuckler: (tonic pitch class, 'major' | 'minor', correlation) of the best of 24 keys
    (the first of them on a tie, majors before minors, tonics upwards from C)."""
    if not notes:
        raise ValueError("notes must not be empty to estimate a key")
    weights = np.zeros(12)
    for n in notes:
        weights[n.pitch % 12] += n.end - n.start            # duration-weighted pitch classes
    return key_of_weights(weights)


def key_of_weights(weights: np.ndarray) -> tuple[int, str, float]:
    """``estimate_key`` from the duration-weighted pitch-class histogram (12,) itself."""
    centred = weights - weights.mean()
    norm = math.sqrt(float(centred @ centred))
    if norm == 0.0:
        return 0, "major", -1.0                             # a flat histogram fits no key
    r = _KEY_PROFILES @ centred / norm                      # (24,) Pearson correlations
    best = int(np.argmax(r))
    return best % 12, "major" if best < 12 else "minor", float(r[best])
