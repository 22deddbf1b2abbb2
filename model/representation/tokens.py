"""Melody tokens: a monophonic melody on a time grid, as a sequence of token ids.

A tune reads ``BOS TS_<meter> (BAR [TS_<meter>] step{bar_steps})+ EOS``. A step token takes one
grid step (``steps_per_quarter`` per quarter note): ``NOTE_<p>`` starts pitch p, ``HOLD`` continues
the sounding note (also across a barline), ``REST`` is silence. ``BAR`` starts a bar and takes no
time; a ``TS`` token follows it only where the meter changes. Every bar is complete: pickups are
padded with leading rests and a short last bar with trailing rests, so ``positions()`` always
says where in the bar the next step falls.

The sequence is canonical: one melody has one token sequence, so ``encode(decode(t)) == t``.
Trailing all-rest bars survive MIDI: ``decode_midi`` writes a text event ``tunesmith:end`` at
the final barline and ``encode_midi`` reads it back (without it, the tune ends with the bar
holding the last note).

Input is turned into tokens by ``encode_notes`` (grid notes) here, and by ``encode_midi`` (any MIDI
file: the melody is extracted first) and ``encode_stream`` (music21) in ``model.representation.parsing``,
which reads files and scores.
"""
from __future__ import annotations

import threading

from dataclasses import asdict, dataclass

import torch

from model.representation import notation
from model.representation.grammar import GrammarState
from model.representation.notation import parse_meter

# Bumped whenever the token format or the parsing rules change: it keys corpus caches.
CODE_VERSION = 1

SPECIALS = ("PAD", "BOS", "EOS", "BAR", "REST", "HOLD")
DEFAULT_METERS = (                 # the meters of the Essen, Bach and O'Neill collections and more
    "1/4", "2/4", "3/4", "4/4", "5/4", "6/4", "7/4", "9/4", "12/4",
    "2/2", "3/2", "4/2", "5/2", "6/2", "2/1", "3/1", "4/1",
    "2/8", "3/8", "4/8", "5/8", "6/8", "7/8", "8/8", "9/8", "12/8",
    "1/8", "1/16",                 # odd short bars in Essen, e.g. a phrase-final bar split from a pickup
)


def _fits_grid(meter: str, steps_per_quarter: int) -> bool:
    num, den = parse_meter(meter)
    return (num * 4 * steps_per_quarter) % den == 0


@dataclass(frozen=True)
class TokenizerConfig:
    steps_per_quarter: int = 4      # 4 = 16th notes; 12 also holds 16th-note triplets
    min_pitch: int = 36             # C2; pitches outside are moved by octaves into range
    max_pitch: int = 96             # C7
    meters: tuple[str, ...] = DEFAULT_METERS

    def __post_init__(self):
        if not 1 <= self.steps_per_quarter <= 48:
            raise ValueError(f"steps_per_quarter must be in [1, 48], got {self.steps_per_quarter}")
        meters = tuple(self.meters)
        if meters == DEFAULT_METERS:        # the defaults keep only the meters that fit the grid
            meters = tuple(m for m in meters if _fits_grid(m, self.steps_per_quarter))
        object.__setattr__(self, "meters", meters)
        if not (0 <= self.min_pitch and self.max_pitch <= 127 and self.max_pitch - self.min_pitch >= 11):
            raise ValueError("min_pitch..max_pitch must lie in [0, 127] and span at least an octave, "
                             f"got {self.min_pitch}..{self.max_pitch}")
        if not self.meters or len(set(self.meters)) != len(self.meters):
            raise ValueError(f"meters must be a non-empty list without repeats, got {self.meters}")
        for m in self.meters:
            if not _fits_grid(m, self.steps_per_quarter):
                raise ValueError(f"meter {m} does not fit a grid of {self.steps_per_quarter} steps per quarter")


@dataclass(frozen=True)
class Note:
    """One note on the grid: MIDI pitch, start and end in grid steps (end exclusive)."""
    pitch: int
    start: int
    end: int

    def __post_init__(self):
        if self.end <= self.start:
            raise ValueError(f"note end must be after start, got start={self.start} end={self.end}")


def monophonic(notes) -> list[Note]:
    """Sorted, non-overlapping notes: at each onset the highest note wins; a note is cut where the next starts."""
    by_onset: dict[int, Note] = {}
    for n in notes:
        if n.start not in by_onset or n.pitch > by_onset[n.start].pitch:
            by_onset[n.start] = n
    ordered = [by_onset[s] for s in sorted(by_onset)]
    out = []
    for n, nxt in zip(ordered, ordered[1:] + [None]):
        end = n.end if nxt is None else min(n.end, nxt.start)
        out.append(Note(n.pitch, n.start, end))
    return out


class MelodyTokenizer:
    """The vocabulary and the conversions between melodies and token ids (see the module docstring)."""

    def __init__(self, config: TokenizerConfig | None = None):
        self.config = config or TokenizerConfig()
        c = self.config
        self.vocab = [*SPECIALS, *(f"TS_{m}" for m in c.meters),
                      *(f"NOTE_{p}" for p in range(c.min_pitch, c.max_pitch + 1))]
        self.ids = {tok: i for i, tok in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id, self.bar_id, self.rest_id, self.hold_id = range(6)
        self._first_ts = len(SPECIALS)
        self._first_note = self._first_ts + len(c.meters)
        self._bar_steps: dict[str, int] = {}
        self._masks: dict[tuple, tuple[torch.Tensor, list[bool]]] = {}   # GrammarState masks by state
        self._decoded: dict[tuple, tuple] = {}   # decode_notes' last results (threads share a tokenizer: _decoded_lock)
        self._decoded_lock = threading.Lock()

    # --- vocabulary -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def steps_per_quarter(self) -> int:
        return self.config.steps_per_quarter

    def note_id(self, pitch: int) -> int:
        if not self.config.min_pitch <= pitch <= self.config.max_pitch:
            raise ValueError(f"pitch must be in [{self.config.min_pitch}, {self.config.max_pitch}], got {pitch}")
        return self._first_note + pitch - self.config.min_pitch

    def pitch_of(self, token_id: int) -> int | None:
        if self._first_note <= token_id < self.vocab_size:
            return token_id - self._first_note + self.config.min_pitch
        return None

    def meter_id(self, meter: str) -> int:
        try:
            return self._first_ts + self.config.meters.index(meter)
        except ValueError:
            raise ValueError(f"meter must be one of {', '.join(self.config.meters)}, got {meter!r}") from None

    def meter_of(self, token_id: int) -> str | None:
        if self._first_ts <= token_id < self._first_note:
            return self.config.meters[token_id - self._first_ts]
        return None

    def bar_steps(self, meter: str) -> int:
        if meter in self._bar_steps:
            return self._bar_steps[meter]
        num, den = parse_meter(meter)
        self._bar_steps[meter] = num * 4 * self.config.steps_per_quarter // den
        return self._bar_steps[meter]

    @property
    def max_bar_steps(self) -> int:
        """The longest bar in steps: the number of distinct positions the network may see."""
        return max(self.bar_steps(m) for m in self.config.meters)

    def is_step(self, token_id: int) -> bool:
        return token_id in (self.rest_id, self.hold_id) or self.pitch_of(token_id) is not None

    def fold_pitch(self, pitch: int) -> int:
        """Move a pitch by octaves into [min_pitch, max_pitch]."""
        while pitch < self.config.min_pitch:
            pitch += 12
        while pitch > self.config.max_pitch:
            pitch -= 12
        return pitch

    # --- grid notes <-> ids -----------------------------------------------------------------
    def encode_notes(self, notes, meter: str | list[tuple[int, str]] = "4/4", *, bars: int | None = None) -> list[int]:
        """Grid notes (step 0 = first downbeat) -> ids. ``meter`` is one meter or [(bar_index, meter)]
        changes starting at bar 0; ``bars`` fixes the number of bars (default: up to the last note).
        Overlapping notes are made monophonic, out-of-range pitches are folded by octaves."""
        changes = dict([(0, meter)] if isinstance(meter, str) else meter)
        if 0 not in changes:
            raise ValueError(f"meter changes must start at bar 0, got {sorted(changes)}")
        notes = monophonic(Note(self.fold_pitch(n.pitch), n.start, n.end) for n in notes)
        if notes and notes[0].start < 0:
            raise ValueError(f"note starts must be >= 0 grid steps, got {notes[0].start}")
        last_end = notes[-1].end if notes else 0
        bar_meters, start = [], 0       # lay bars out until the notes (or `bars` bars) are covered
        while (len(bar_meters) < bars) if bars is not None else (start < last_end or not bar_meters):
            m = changes.get(len(bar_meters), bar_meters[-1] if bar_meters else None)
            self.meter_id(m)
            bar_meters.append(m)
            start += self.bar_steps(m)
        if bars is not None and (bars < 1 or last_end > start):
            raise ValueError(f"bars must be >= 1 and hold all notes (they end at step {last_end}), got {bars}")
        steps = [self.rest_id] * start
        for n in notes:
            steps[n.start] = self.note_id(n.pitch)
            steps[n.start + 1:n.end] = [self.hold_id] * (n.end - n.start - 1)
        ids, pos = [self.bos_id, self.meter_id(bar_meters[0])], 0
        for b, m in enumerate(bar_meters):
            ids.append(self.bar_id)
            if b and m != bar_meters[b - 1]:
                ids.append(self.meter_id(m))
            ids.extend(steps[pos:pos + self.bar_steps(m)])
            pos += self.bar_steps(m)
        ids.append(self.eos_id)
        return ids

    def decode_notes(self, ids) -> tuple[list[Note], list[tuple[int, str]]]:
        """ids -> (grid notes, [(bar_index, meter)] at bar 0 and at every change). Validates first.

        The last few results are kept (a generated melody is decoded by the quality gate and again
        for its result); each call returns fresh lists of the immutable notes."""
        key = tuple(int(t) for t in ids)
        hit = self._decoded.get(key)
        if hit is None:
            hit = self._decode_notes(key)
            with self._decoded_lock:
                if len(self._decoded) >= 64:
                    self._decoded.pop(next(iter(self._decoded)))
                self._decoded[key] = hit
        return list(hit[0]), list(hit[1])

    def _decode_notes(self, ids: tuple[int, ...]) -> tuple[tuple[Note, ...], tuple[tuple[int, str], ...]]:
        self.validate(ids)
        notes, meters, step, bar = [], [], 0, -1
        pitch = start = None
        # pitch_of / meter_of / is_step inlined: a generated melody is decoded on the batcher's thread
        bar_id, hold_id, rest_id, first_ts, first_note = self.bar_id, self.hold_id, self.rest_id, self._first_ts, self._first_note
        pitch_offset, meter_names = self.config.min_pitch - first_note, self.config.meters
        for t in ids:
            if t == bar_id:
                bar += 1
            elif first_ts <= t < first_note:                        # a meter
                meters.append((max(bar, 0), meter_names[t - first_ts]))
            elif t >= first_note or t == rest_id or t == hold_id:  # a step (ids are valid: < vocab_size)
                if t != hold_id and pitch is not None:
                    notes.append(Note(pitch, start, step))
                    pitch = None
                if t >= first_note:
                    pitch, start = t + pitch_offset, step
                step += 1
        if pitch is not None:
            notes.append(Note(pitch, start, step))
        return tuple(notes), tuple(meters)

    def bar_count(self, ids) -> int:
        return sum(1 for t in ids if int(t) == self.bar_id)

    def validate(self, ids) -> None:
        """Raise ValueError saying where ``ids`` breaks the grammar."""
        ids = [int(t) for t in ids]
        if not ids or ids[0] != self.bos_id:
            raise ValueError("token sequence must start with BOS")
        state = GrammarState(self)
        for i, t in enumerate(ids[1:], start=1):
            state.advance(t, index=i)
        if not state.finished:
            raise ValueError(f"token sequence ends without EOS after {len(ids)} tokens")

    def positions(self, ids) -> list[int]:
        """For each index i, the position in the bar of the next grid step after token i.
        Accepts a prefix (no EOS yet); the sequence must start with BOS."""
        ids = [int(t) for t in ids]
        if ids and ids[0] != self.bos_id:
            raise ValueError("token sequence must start with BOS")
        state, out = GrammarState(self), [0] * len(ids)
        for i, t in enumerate(ids[1:], start=1):
            state.advance(t, index=i)
            out[i] = state.position
        return out

    def bars_remaining(self, ids) -> list[int]:
        """For each index i, the number of bars that start after token i (BAR tokens later in ``ids``):
        0 throughout the last bar and at EOS, so the network's distance-to-end input counts down to 0."""
        out, later = [0] * len(ids), 0
        for i in range(len(ids) - 1, -1, -1):
            out[i] = later
            if int(ids[i]) == self.bar_id:
                later += 1
        return out

    def start_ids(self, meter: str) -> list[int]:
        """The ids that open a tune in ``meter``: BOS TS."""
        return [self.bos_id, self.meter_id(meter)]

    # --- writing MIDI and MusicXML ----------------------------------------------------------
    def score(self, ids, qpm: float = 120.0) -> notation.Score:
        """ids -> the plain values the MIDI and MusicXML writers need (model/representation/notation.py). Validates first."""
        notes, meters = self.decode_notes(ids)
        return notation.Score(tuple((n.pitch, n.start, n.end) for n in notes), tuple(meters),
                              tuple(self._bar_starts(ids)), self.config.steps_per_quarter, float(qpm))

    def decode_musicxml(self, ids, qpm: float = 120.0) -> bytes:
        """ids -> MusicXML bytes (through music21), with meters, tempo and tied notes across barlines."""
        if not 0 < qpm <= 1000:
            raise ValueError(f"qpm must be in (0, 1000], got {qpm}")
        return notation.musicxml_bytes(self.score(ids, qpm))

    def decode_midi(self, ids, qpm: float = 120.0, program: int = 0):
        """ids -> pretty_midi.PrettyMIDI with one instrument, a tempo, time signatures and an end marker."""
        if not 0 < qpm <= 1000:
            raise ValueError(f"qpm must be in (0, 1000], got {qpm}")
        return notation.midi(self.score(ids, qpm), program)

    def decode_midi_bytes(self, ids, qpm: float = 120.0, program: int = 0) -> bytes:
        if not 0 < qpm <= 1000:
            raise ValueError(f"qpm must be in (0, 1000], got {qpm}")
        return notation.midi_bytes(self.score(ids, qpm), program)

    def _bar_starts(self, ids) -> list[int]:
        """Grid step of every bar start, plus the end of the last bar."""
        starts, step = [], 0
        for t in ids:
            t = int(t)
            if t == self.bar_id:
                starts.append(step)
            elif self.is_step(t):
                step += 1
        return starts + [step]

    # --- checkpoints ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self.config)
        d["meters"] = list(d["meters"])
        return {"config": d, "vocab": list(self.vocab), "code_version": CODE_VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> "MelodyTokenizer":
        tok = cls(TokenizerConfig(**d["config"]))
        if "vocab" in d and list(d["vocab"]) != tok.vocab:
            raise ValueError("tokenizer vocabulary in the checkpoint does not match its config")
        return tok


# ---- inputs ------------------------------------------------------------------------------------
def melody_notes(melody, tokenizer=None) -> tuple[list[Note], int, int | None]:
    """(notes, total grid steps, steps per bar of the first meter) of token ids or a note list.

    For a note list the total is the last note's end and the bar length is unknown (None)."""
    items = list(melody)
    if items and isinstance(items[0], Note) or not items:
        notes = sorted(items, key=lambda n: n.start)
        return notes, (notes[-1].end if notes else 0), None
    if tokenizer is None:
        raise ValueError("tokenizer is required when the melody is given as token ids")
    notes, meters = tokenizer.decode_notes(items)
    total = sum(1 for t in items if tokenizer.is_step(int(t)))
    return notes, total, tokenizer.bar_steps(meters[0][1]) if meters else None

