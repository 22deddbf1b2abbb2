"""Generation parameters: what a request may ask for, checked before any model is loaded.

The limits below are the only definition of each range: ``GenerationParams.validate`` checks them,
the service's request schema (service/schemas.py), ``tunesmith generate``'s help (model/cli.py) and
the composing page's inputs (through the template context) read them from here. Nothing here
imports torch, so the API process can too.

``GenerationParams.validate`` raises ``ParameterError`` (a ValueError naming the field and what it
may be) for the first bad parameter; the service maps it to a 400 naming the field. ``primer_notes``
checks a primer: a note list becomes grid notes, MIDI comes back as bytes.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING

from model.representation.chords import parse_progression
from model.representation.keys import PITCH_CLASSES, SCALES
from model.representation.styles import ANY, STYLES

if TYPE_CHECKING:
    from model.representation.tokens import MelodyTokenizer

MAX_BARS = 256                       # bars generated after the primer
MAX_TEMPERATURE = 5.0                # temperature in (0, MAX_TEMPERATURE]
# The temperature a request that names a style gets when it sets none (else 1): Chinese songs are 8 %
# of the training tunes, and at 1 the melodies asked for in that style were recognised as Chinese
# 0.85 as often as real ones on the valid split, 0.89 at 0.9 (docs/model-card.md, "Styles").
STYLE_TEMPERATURES = {"chinese": 0.9}
MAX_TOP_K = 128                      # at least the vocabulary of the shipped tokenizer
MIN_TEMPO, MAX_TEMPO = 20, 300       # quarter notes per minute
MAX_SEED = 2 ** 32 - 1
MAX_COUNT = 16                       # melodies in one batch
MAX_BEAM_WIDTH = 16
MAX_PITCH = 127                      # MIDI pitches are 0..127
MAX_PRIMER_NOTES = 512               # a primer is a few bars, not a symphony
MAX_PRIMER_START_BEATS = 1024        # a primer note's start, in beats
MAX_PRIMER_DURATION_BEATS = 64       # a primer note's duration, in beats
MAX_PRIMER_BYTES = 72 * 1024         # a MIDI primer file
MAX_PRIMER_BASE64 = 4 * -(-MAX_PRIMER_BYTES // 3)   # the same file as base64 text (98,304 characters)
DEFAULT_TEMPO = 120.0                # when neither the request nor its primer sets one
MAX_REDRAWS = 8                      # the quality gate's bound on redraws per melody
MAX_TONIC_PULL = 10.0                # nats; e^10 ~ 22,000 times the tonic's probability
DEFAULT_TONIC_PULL = 3.0             # chosen on the valid split (docs/model-card.md, "Endings")
CADENCES = ("none", "tonic")
CHORD_TONES = ("soft", "strict", "none")   # what given chords do on strong beats (model/generation/chord_tones.py)
MAX_CHORDS_TEXT = 2048               # characters of a request's chords ("G C | D7 G"), or of one bar of a list
MAX_CHORD_BARS = 256                 # bars of a request's chords given as a list
FORM_OFF = "none"                    # form: no form at all (null: a form sampled from the training tunes')
FORM_LETTERS = "ABCDEFGH"
FORM_PATTERN = r"^(none|([A-H]'*){1,64})$"   # "AABB", "ABAC", "AA'BA" (model/generation/form_plan.py)
FORM_ALLOWED = "null, 'none', or 1 to 64 section letters A-H, each with optional prime marks, e.g. AABB, ABAC, AA'BA"


class ParameterError(ValueError):
    """A bad generation parameter: ``field`` names it, ``allowed`` says what it may be."""

    def __init__(self, field: str, allowed: str, got):
        super().__init__(f"{field} must be {allowed}, got {got!r}")
        self.field, self.allowed = field, allowed


def _number(value, integer=False) -> bool:
    return isinstance(value, Integral if integer else Real) and not isinstance(value, bool)


@dataclass
class GenerationParams:
    bars: int = 8                    # bars generated after the primer
    temperature: float | None = None  # None: the style's (STYLE_TEMPERATURES), else 1
    top_k: int = 0                   # 0: no top-k cut
    top_p: float = 1.0               # 1: no nucleus cut
    seed: int | None = None          # None: a fresh random seed (reported in the result)
    key: str | None = None           # tonic; with scale=None the scale is major
    scale: str | None = None
    tempo: float | None = None       # quarter notes per minute; None: the primer's tempo, else DEFAULT_TEMPO
    meter: str | None = None         # None: the primer's meter, else 4/4
    primer: bytes | list | str | None = None  # MIDI bytes, a MIDI path, or [[pitch, start_beats, duration_beats]]
    include_primer: bool = True
    count: int = 1
    beam_width: int = 1
    min_pitch: int | None = None
    max_pitch: int | None = None
    avoid_repetition: bool = True
    short_term: bool = True          # mix in the model's short-term copy model, when it has one
    min_bars: int | None = None      # a length range: the tune may end at any barline from min_bars (default 1)
    max_bars: int | None = None      # ... up to max_bars, where the model chooses (EOS forced at max_bars); replaces bars
    cadence: str = "none"            # "tonic": the last note is the tonic, on a strong beat, at least a beat long (model/generation/endings.py)
    redraw_degenerate: bool = True   # the quality gate: redraw a degenerate melody (up to MAX_REDRAWS times)
    tonic_pull: float = DEFAULT_TONIC_PULL  # nats added to the tonic at the last bar's strong beats when sampling (model/generation/endings.py); 0: off
    regenerate: dict | None = None   # {"from_bar", "to_bar"} (1-based, inclusive): bars of the primer regenerated in place (model/generation/infill.py)
    chords: str | list | None = None  # a progression over the generated bars, "G C | D7 G" or a list of bars (repeats)
    chord_tones: str = "soft"        # with chords: "strict" masks strong beats to chord tones, "soft" leans to them
    form: str | None = None          # sections, e.g. "AABB"; None: sampled from the training tunes' forms; "none": off
    phrase_bars: int | None = None   # bars a section; None: bars / sections
    form_strict: bool = False        # repeated sections copied note for note (primed ones and second endings too)
    pickup: bool | None = None       # True: the first bar is a pickup; False: the first note on beat one; None: free
    style: str | None = None         # a tradition the model knows (model/representation/styles.py); None or "any": any

    @property
    def sampling_temperature(self) -> float:
        """The temperature the draw uses: the one asked for, else the requested style's, else 1."""
        return self.temperature if self.temperature is not None else STYLE_TEMPERATURES.get(self.style, 1.0)

    def validate(self, tokenizer: MelodyTokenizer | None = None) -> None:
        """Raise ParameterError (a ValueError) for the first bad parameter."""
        lo, hi = (tokenizer.config.min_pitch, tokenizer.config.max_pitch) if tokenizer else (0, MAX_PITCH)
        checks = [
            ("bars", f"an integer in [1, {MAX_BARS}]", _number(self.bars, True) and 1 <= self.bars <= MAX_BARS),
            ("temperature", f"null or in (0, {MAX_TEMPERATURE:g}]",
             self.temperature is None or _number(self.temperature) and 0 < self.temperature <= MAX_TEMPERATURE),
            ("top_k", f"an integer >= 0 and <= {MAX_TOP_K}",
             _number(self.top_k, True) and 0 <= self.top_k <= MAX_TOP_K),
            ("top_p", "in (0, 1]", _number(self.top_p) and 0 < self.top_p <= 1),
            ("seed", f"null or an integer in [0, {MAX_SEED}]",
             self.seed is None or _number(self.seed, True) and 0 <= self.seed <= MAX_SEED),
            ("key", "null or one of " + ", ".join(PITCH_CLASSES), self.key is None or self.key in PITCH_CLASSES),
            ("scale", "null or one of " + ", ".join(SCALES), self.scale is None or self.scale in SCALES),
            ("key", "given when scale is given", self.scale is None or self.key is not None),
            ("tempo", f"in [{MIN_TEMPO}, {MAX_TEMPO}]",
             self.tempo is None or _number(self.tempo) and MIN_TEMPO <= self.tempo <= MAX_TEMPO),
            ("include_primer", "true or false", isinstance(self.include_primer, bool)),
            ("count", f"an integer in [1, {MAX_COUNT}]", _number(self.count, True) and 1 <= self.count <= MAX_COUNT),
            ("beam_width", f"an integer in [1, {MAX_BEAM_WIDTH}]",
             _number(self.beam_width, True) and 1 <= self.beam_width <= MAX_BEAM_WIDTH),
            ("count", f"at most beam_width ({self.beam_width}) when beam_width > 1",
             not _number(self.beam_width, True) or self.beam_width == 1 or self.count <= self.beam_width),
            ("min_pitch", f"null or an integer in [{lo}, {hi}]",
             self.min_pitch is None or _number(self.min_pitch, True) and lo <= self.min_pitch <= hi),
            ("max_pitch", f"null or an integer in [{lo}, {hi}]",
             self.max_pitch is None or _number(self.max_pitch, True) and lo <= self.max_pitch <= hi),
            ("avoid_repetition", "true or false", isinstance(self.avoid_repetition, bool)),
            ("short_term", "true or false", isinstance(self.short_term, bool)),
        ]
        bar_limit = MAX_BARS
        checks += [
            ("max_bars", f"null or an integer in [1, {bar_limit}]",
             self.max_bars is None or _number(self.max_bars, True) and 1 <= self.max_bars <= bar_limit),
            ("min_bars", f"null or an integer in [1, {bar_limit}]",
             self.min_bars is None or _number(self.min_bars, True) and 1 <= self.min_bars <= bar_limit),
            ("max_bars", "given when min_bars is given", self.min_bars is None or self.max_bars is not None),
            ("cadence", "one of " + ", ".join(CADENCES), self.cadence in CADENCES),
            ("redraw_degenerate", "true or false", isinstance(self.redraw_degenerate, bool)),
            ("tonic_pull", f"a number in [0, {MAX_TONIC_PULL:g}]",
             _number(self.tonic_pull) and 0 <= self.tonic_pull <= MAX_TONIC_PULL),
        ]
        checks.append(("chord_tones", "one of " + ", ".join(CHORD_TONES), self.chord_tones in CHORD_TONES))
        checks += [
            ("form", FORM_ALLOWED, self.form is None or isinstance(self.form, str) and re.match(FORM_PATTERN, self.form)),
            ("phrase_bars", f"null or an integer in [1, {MAX_BARS}]",
             self.phrase_bars is None or _number(self.phrase_bars, True) and 1 <= self.phrase_bars <= MAX_BARS),
            ("form_strict", "true or false", isinstance(self.form_strict, bool)),
            ("pickup", "null, true or false", self.pickup is None or isinstance(self.pickup, bool)),
            ("style", "null or one of " + ", ".join((*STYLES, ANY)), self.style is None or self.style in (*STYLES, ANY)),
        ]
        for name, allowed, ok in checks:
            if not ok:
                raise ParameterError(name, allowed, getattr(self, name))
        self._check_regenerate()
        self.progression()                                                  # raises on unknown chords
        problem = form_problem(self.form, self.bars, self.phrase_bars, self.ranged, self.pickup, self.primer is not None,
                               self.regenerate is not None)
        if problem is not None:
            raise problem
        if self.max_bars is not None and (self.min_bars or 1) > self.max_bars:
            raise ParameterError("max_bars", f">= min_bars ({self.min_bars})", self.max_bars)
        if self.min_pitch is not None and self.max_pitch is not None and self.min_pitch > self.max_pitch:
            raise ParameterError("max_pitch", f">= min_pitch ({self.min_pitch})", self.max_pitch)
        allowed = self.allowed_pitches(lo, hi)
        if not allowed:
            raise ParameterError("max_pitch", f"high enough that some {self.key} {self.scale or 'major'} pitch "
                                 f"lies in [{self.min_pitch if self.min_pitch is not None else lo}, max_pitch]",
                                 self.max_pitch)
        if self.cadence == "tonic" and self.key is not None \
                and not any((p - PITCH_CLASSES[self.key]) % 12 == 0 for p in allowed):
            raise ParameterError("max_pitch", f"high enough that a {self.key} (the cadence's tonic) lies in the "
                                 f"pitch range", self.max_pitch)
        if self.cadence == "tonic" and self.key is None and len({p % 12 for p in allowed}) < 12:
            raise ParameterError("min_pitch", "at least an octave below max_pitch when cadence is 'tonic' without a "
                                 "key (any tonic may be needed); or give a key", self.min_pitch)
        if self.meter is not None:
            if tokenizer is not None:
                try:
                    tokenizer.meter_id(self.meter)
                except ValueError:
                    raise ParameterError("meter", "null or one of " + ", ".join(tokenizer.config.meters),
                                         self.meter) from None
            elif not isinstance(self.meter, str):
                raise ParameterError("meter", "null or a meter like '3/4'", self.meter)
        primer_notes(self.primer, tokenizer.steps_per_quarter if tokenizer else 4)  # raises on a bad primer

    def _check_regenerate(self) -> None:
        """The span's shape; that it lies inside the primer is checked once the primer is read."""
        if self.regenerate is None:
            return
        span = self.regenerate
        shape = ('{"from_bar": first, "to_bar": last}: bars of the primer, 1-based and inclusive, '
                 f"from_bar <= to_bar <= {MAX_BARS}")
        if not (isinstance(span, dict) and set(span) == {"from_bar", "to_bar"}
                and all(_number(span[k], True) for k in span) and 1 <= span["from_bar"] <= span["to_bar"] <= MAX_BARS):
            raise ParameterError("regenerate", shape, span)
        if self.primer is None:
            raise ParameterError("regenerate", "given with a primer (the melody whose bars are regenerated)", span)
        if self.ranged:
            raise ParameterError("max_bars", "null with regenerate (the span's bars fix the length)", self.max_bars)

    @property
    def span(self) -> tuple[int, int] | None:
        """(from_bar, to_bar) of ``regenerate``, or None."""
        return None if self.regenerate is None else (self.regenerate["from_bar"], self.regenerate["to_bar"])

    @property
    def ranged(self) -> bool:
        """Whether the length is a range (min_bars..max_bars, the model chooses) rather than exactly ``bars``."""
        return self.max_bars is not None

    def progression(self):
        """The chords as bars of ``Chord`` (None without chords); ParameterError names a bad one."""
        if self.chords is None:
            return None
        try:
            return parse_progression(self.chords)
        except ValueError as e:
            raise ParameterError("chords", f"a progression of known chords ({e})", self.chords) from None

    def allowed_pitches(self, lo: int, hi: int) -> list[int]:
        """MIDI pitches the key/scale and range constraints allow, within [lo, hi]."""
        lo = max(lo, self.min_pitch) if self.min_pitch is not None else lo
        hi = min(hi, self.max_pitch) if self.max_pitch is not None else hi
        if self.key is None:
            return list(range(lo, hi + 1))
        tonic, steps = PITCH_CLASSES[self.key], SCALES[self.scale or "major"]
        return [p for p in range(lo, hi + 1) if (p - tonic) % 12 in steps]

    def to_dict(self) -> dict:
        """JSON-ready parameters (a MIDI primer is summarised by its size)."""
        d = asdict(self)
        if isinstance(self.primer, (bytes, bytearray)):
            d["primer"] = f"<MIDI, {len(self.primer)} bytes>"
        return d


def form_sections(form: str) -> list[tuple[str, int]]:
    """A form's sections as (letter, prime marks): "AA'BA" -> [("A", 0), ("A", 1), ("B", 0), ("A", 0)]."""
    return [(m.group(1), len(m.group(2))) for m in re.finditer(r"([A-H])('*)", form)]


def form_problem(form, bars, phrase_bars, ranged: bool, pickup, primer: bool,
                 regenerate: bool = False) -> ParameterError | None:
    """What is wrong with a request's form, phrase_bars and pickup together (well-typed fields), or None.
    The service's schema asks the same question (service/schemas.py)."""
    if pickup is not None and primer:
        return ParameterError("pickup", "null with a primer (a pickup opens a tune; the primer opens this one)", pickup)
    if form in (None, FORM_OFF):
        if phrase_bars is not None:
            return ParameterError("phrase_bars", "null unless form names sections (e.g. AABB)", phrase_bars)
        return None
    if ranged:
        return ParameterError("form", "null or 'none' with min_bars/max_bars (a form needs a fixed number of bars)",
                              form)
    if regenerate:
        return ParameterError("form", "null or 'none' with regenerate (the kept bars have their own form)", form)
    sections = len(form_sections(form))
    if phrase_bars is None and bars % sections:
        return ParameterError("phrase_bars", f"given when bars ({bars}) is not a multiple of the form's "
                              f"{sections} sections", phrase_bars)
    if phrase_bars is not None and phrase_bars * sections != bars:
        return ParameterError("phrase_bars", f"bars / sections = {bars} / {sections} (sections x phrase_bars must "
                              "be bars)", phrase_bars)
    return None


def primer_notes(primer, steps_per_quarter: int):
    """Check a primer; a note list becomes grid Notes, MIDI (bytes or path) comes back as bytes."""
    if primer is None:
        return None
    if isinstance(primer, (bytes, bytearray)):
        if not 0 < len(primer) <= MAX_PRIMER_BYTES:
            raise ParameterError("primer", f"MIDI data of 1 to {MAX_PRIMER_BYTES} bytes", f"{len(primer)} bytes")
        return bytes(primer)
    if isinstance(primer, (str, Path)):
        path = Path(primer)
        if not path.is_file():
            raise ParameterError("primer", "MIDI bytes, a MIDI file path or a note list", str(primer))
        return primer_notes(path.read_bytes(), steps_per_quarter)
    from model.representation.tokens import Note
    note = (f"[pitch 0..{MAX_PITCH}, start_beats in [0, {MAX_PRIMER_START_BEATS}], "
            f"duration_beats in (0, {MAX_PRIMER_DURATION_BEATS}]]")
    if not isinstance(primer, (list, tuple)) or not 0 < len(primer) <= MAX_PRIMER_NOTES:
        raise ParameterError("primer", f"a list of {note} with 1 to {MAX_PRIMER_NOTES} notes", primer)
    notes = []
    for i, item in enumerate(primer):
        ok = isinstance(item, (list, tuple)) and len(item) == 3 and _number(item[0], True) \
            and all(_number(x) for x in item[1:]) and 0 <= item[0] <= MAX_PITCH \
            and 0 <= item[1] <= MAX_PRIMER_START_BEATS and 0 < item[2] <= MAX_PRIMER_DURATION_BEATS
        if not ok:
            raise ParameterError(f"primer[{i}]", note, item)
        start = round(item[1] * steps_per_quarter)
        end = max(start + 1, round((item[1] + item[2]) * steps_per_quarter))
        notes.append(Note(int(item[0]), start, end))
    return notes
