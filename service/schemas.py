"""Request models for /api/v1, validated at the edge with pydantic.

Unknown fields, wrong types and values out of range are all reported at once, each with the
range it must be in: `validate_request(Model, body)` raises `RequestInvalid`, which the app
turns into `400 {"error": "validation failed", "fields": [{field, message, allowed}]}`.
These models also feed the OpenAPI document (service/openapi.py).

Nothing here defines a rule of its own where a lower layer has one: the generation limits, key and
scale names and defaults come from model/generation/params.py, the training defaults from
model/training/config.py's TrainConfig, model names and the longest training budget from worker/.
All of those are torch-free, so the API process validates without importing torch.
"""
import dataclasses
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from model.generation import params
from model.generation.params import GenerationParams
from model.representation.styles import ANY, STYLE_DESCRIPTIONS, STYLES
from model.training.config import TrainConfig
from worker import MAX_TRAIN_MINUTES, NAME_PATTERN, SHIPPED_NAME, MidiInvalid, check_midi

PrimerNote = tuple[Annotated[int, Field(ge=0, le=params.MAX_PITCH)],                      # MIDI pitch
                   Annotated[float, Field(ge=0, le=params.MAX_PRIMER_START_BEATS)],      # start, in beats
                   Annotated[float, Field(gt=0, le=params.MAX_PRIMER_DURATION_BEATS)]]   # duration, in beats
KEYS = tuple(params.PITCH_CLASSES)
SCALES = tuple(params.SCALES)
GENERATION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GenerationParams)}
TRAINING_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

class RequestInvalid(Exception):
    """A request that failed validation; `fields` is the list the API returns."""

    def __init__(self, fields: list[dict]):
        super().__init__(f"{len(fields)} invalid field(s)")
        self.fields = fields


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class BarSpan(StrictModel):
    """Bars of the primer, 1-based and inclusive."""
    from_bar: int = Field(ge=1, le=params.MAX_BARS, description="the first bar regenerated")
    to_bar: int = Field(ge=1, le=params.MAX_BARS, description="the last bar regenerated")


class MelodyRequest(StrictModel):
    """POST /api/v1/melodies. Every field is optional."""
    bars: int = Field(GENERATION_DEFAULTS["bars"], ge=1, le=params.MAX_BARS,
                      description="bars to generate (after the primer)")
    temperature: float | None = Field(GENERATION_DEFAULTS["temperature"], gt=0, le=params.MAX_TEMPERATURE,
                                      description="sampling temperature; none = the requested style's "
                                      "(" + ", ".join(f"{k} {v:g}" for k, v in params.STYLE_TEMPERATURES.items())
                                      + "), else 1")
    top_k: int = Field(GENERATION_DEFAULTS["top_k"], ge=0, le=params.MAX_TOP_K,
                       description="sample from the k likeliest tokens; 0 = all")
    top_p: float = Field(GENERATION_DEFAULTS["top_p"], gt=0, le=1, description="nucleus sampling mass; 1 = off")
    seed: int | None = Field(None, ge=0, le=params.MAX_SEED, description="random seed; none = pick one")
    key: Literal[KEYS] | None = Field(None, description="tonic of the scale the notes must stay in")
    scale: Literal[SCALES] | None = Field(None, description="the scale (needs key; key alone = major)")
    tempo: float | None = Field(GENERATION_DEFAULTS["tempo"], ge=params.MIN_TEMPO, le=params.MAX_TEMPO,
                                description=f"quarter notes per minute; none = the primer's tempo, else "
                                            f"{params.DEFAULT_TEMPO:g}")
    meter: str | None = Field(None, pattern=r"^\d{1,2}/\d{1,2}$", description="e.g. 4/4, 6/8")
    primer: Annotated[str, Field(min_length=4, max_length=params.MAX_PRIMER_BASE64)] \
        | Annotated[list[PrimerNote], Field(min_length=1, max_length=params.MAX_PRIMER_NOTES)] | None = Field(
        None, description="base64 MIDI file, or notes [pitch, start_beats, duration_beats]")
    include_primer: bool = Field(GENERATION_DEFAULTS["include_primer"],
                                 description="keep the primer at the start of the output")
    model: str | None = Field(None, pattern=NAME_PATTERN, description="registered model; none = the default")
    count: int = Field(GENERATION_DEFAULTS["count"], ge=1, le=params.MAX_COUNT, description="how many melodies")
    beam_width: int = Field(GENERATION_DEFAULTS["beam_width"], ge=1, le=params.MAX_BEAM_WIDTH,
                            description="beam search width; 1 = sampling")
    min_pitch: int | None = Field(None, ge=0, le=params.MAX_PITCH, description="lowest MIDI pitch allowed")
    max_pitch: int | None = Field(None, ge=0, le=params.MAX_PITCH, description="highest MIDI pitch allowed")
    avoid_repetition: bool = Field(GENERATION_DEFAULTS["avoid_repetition"],
                                   description="discourage one-note loops and long silences")
    short_term: bool = Field(GENERATION_DEFAULTS["short_term"], description="mix in the model's short-term model (its copies of the melody "
                             "so far), when it has one; false = the network alone")
    min_bars: int | None = Field(None, ge=1, le=params.MAX_BARS, description="with max_bars: the tune may end at "
                                 "any barline from this bar on (default 1)")
    max_bars: int | None = Field(None, ge=1, le=params.MAX_BARS, description="a length range instead of bars: the "
                                 "tune ends where the model ends it, at the latest after max_bars bars")
    cadence: Literal[params.CADENCES] = Field(GENERATION_DEFAULTS["cadence"], description="tonic: the last note is "
                                              "the tonic of the key (requested, the primer's, or estimated), on a "
                                              "strong beat, at least a beat long (held to the end when the tune runs its full length)")
    tonic_pull: float = Field(GENERATION_DEFAULTS["tonic_pull"], ge=0, le=params.MAX_TONIC_PULL, description="a soft "
                              "ending: nats added to the tonic (of the key, the primer's, or the melody's estimated "
                              "key) at the strong beats of the last bar, and, in a length range, to ending after a bar "
                              "that cadences (sampling only: beam search ignores it); 0 leaves the ending to the model")
    redraw_degenerate: bool = Field(GENERATION_DEFAULTS["redraw_degenerate"], description="the quality gate: "
                                    f"redraw a degenerate melody (at most {params.MAX_REDRAWS} times, seeds derived "
                                    "from the request's seed)")
    chords: Annotated[str, Field(min_length=1, max_length=params.MAX_CHORDS_TEXT)] \
        | Annotated[list[Annotated[str, Field(min_length=1, max_length=params.MAX_CHORDS_TEXT)]],
                    Field(min_length=1, max_length=params.MAX_CHORD_BARS)] | None = Field(
        None, description="a chord progression over the generated bars: 'G C | D7 G' (bars separated by |, the "
        "chords inside a bar split it evenly) or a list of bars ['G', 'C', 'D7 G']; it repeats when the melody is "
        "longer. Chords: a root (C, C#, Db ... B) and nothing (major), m, dim or 7. The melody's strong beats lean "
        "to the chord tones (chord_tones), and its files carry the chords")
    chord_tones: Literal[params.CHORD_TONES] = Field(GENERATION_DEFAULTS["chord_tones"], description="with chords: "
                                                     "strict = every note starting on a strong beat is a chord "
                                                     "tone; soft = such notes lean to chord tones; none = the "
                                                     "chords only go into the files")
    harmonize: bool = Field(False, description="chords under each melody (the given chords, else estimated ones): "
                            "in the result, as chord symbols in the MusicXML and JSON, and as an accompaniment "
                            "track in the MIDI and WAV")
    form: str | None = Field(GENERATION_DEFAULTS["form"], pattern=params.FORM_PATTERN, description="sections, e.g. "
                             "AABB, ABAC, AA'BA (letters A-H; ' marks a varied repeat): a repeated section copies the "
                             "letter's first section, its last bar keeping only the rhythm; a primed one keeps only the "
                             "rhythm, its last bar free; 'none': no form; null: the form of a training tune of the "
                             "same meter and length, drawn with the seed (fixed bars, no primer)")
    phrase_bars: int | None = Field(GENERATION_DEFAULTS["phrase_bars"], ge=1, le=params.MAX_BARS,
                                    description="bars a section (sections x phrase_bars = bars); null: bars / sections")
    form_strict: bool = Field(GENERATION_DEFAULTS["form_strict"], description="copy repeated sections note for note "
                              "(primed ones and last bars too)")
    pickup: bool | None = Field(GENERATION_DEFAULTS["pickup"], description="true: begin with a partial bar (an "
                                "anacrusis); false: the first note on beat one; null: free (the sampled form's start); "
                                "never a whole bar of rests")
    style: Literal[(*STYLES, ANY)] | None = Field(GENERATION_DEFAULTS["style"], description="the tradition to write "
                                                 "in: " + "; ".join(f"{name}: {text}" for name, text in
                                                                    STYLE_DESCRIPTIONS.items()) + ". The model must "
                                                 "know it (GET /api/v1/models lists each model's styles); null or "
                                                 "any: no style asked for, the model's own mix (a model without a "
                                                 "style input takes only these)")

    regenerate: BarSpan | None = Field(None, description="with a primer: regenerate these bars of the primer in "
                                       "place, keeping every note outside them (count gives alternatives; bars is "
                                       "ignored)")

    @model_validator(mode="after")
    def _check_together(self):
        problems = []
        if self.regenerate is not None and self.primer is None:
            problems.append(("regenerate", "regenerate needs a primer: the melody whose bars are regenerated",
                             "a primer (base64 MIDI or notes) with regenerate"))
        if self.regenerate is not None and self.max_bars is not None:
            problems.append(("max_bars", "max_bars cannot be given with regenerate: the span's bars fix the length",
                             "null"))
        if self.regenerate is not None and self.regenerate.from_bar > self.regenerate.to_bar:
            problems.append(("regenerate", f"regenerate.to_bar must be >= from_bar ({self.regenerate.from_bar}), got "
                             f"{self.regenerate.to_bar}", f"integer from {self.regenerate.from_bar} to {params.MAX_BARS}"))
        if self.min_pitch is not None and self.max_pitch is not None and self.min_pitch > self.max_pitch:
            problems.append(("max_pitch", f"max_pitch must be >= min_pitch ({self.min_pitch}), got {self.max_pitch}",
                             f"integer from {self.min_pitch} to 127"))
        if self.scale is not None and self.key is None:
            problems.append(("key", "key is needed when scale is given", "one of: " + ", ".join(KEYS)))
        if self.min_bars is not None and self.max_bars is None:
            problems.append(("max_bars", "max_bars is needed when min_bars is given",
                             f"integer from {self.min_bars} to {params.MAX_BARS}"))
        if self.min_bars is not None and self.max_bars is not None and self.min_bars > self.max_bars:
            problems.append(("max_bars", f"max_bars must be >= min_bars ({self.min_bars}), got {self.max_bars}",
                             f"integer from {self.min_bars} to {params.MAX_BARS}"))
        if self.chords is not None:
            try:
                GenerationParams(chords=self.chords).progression()
            except params.ParameterError as e:
                problems.append(("chords", str(e), "bars of chords separated by |, e.g. 'G C | D7 G', or a list "
                                 "of bars; a chord is a root (C, C#, Db ... B) and nothing (major), m, dim or 7"))
        form = params.form_problem(self.form, self.bars, self.phrase_bars, self.max_bars is not None, self.pickup,
                                   self.primer is not None, self.regenerate is not None)
        if form is not None:
            problems.append((form.field, str(form), form.allowed))
        if self.beam_width > 1 and self.count > self.beam_width:
            problems.append(("count", f"count must be at most beam_width ({self.beam_width}) with beam search, "
                             f"got {self.count}", f"integer from 1 to {self.beam_width}"))
        if problems:
            raise _Together(problems)
        return self


class HarmonizationRequest(StrictModel):
    """POST /api/v1/harmonizations: chords and an accompaniment under a user's melody."""
    melody: Annotated[str, Field(min_length=4, max_length=params.MAX_PRIMER_BASE64)] = Field(
        description="a MIDI file (base64), within a primer's bounds; its top line is harmonized")


class TrainingRequest(StrictModel):
    """POST /api/v1/training-jobs. `data` names a music21 collection; or upload a zip of MIDI
    files, as multipart field `file` or as `data_base64` in JSON."""
    data: str | None = Field(None, pattern=r"^(music21:)?[A-Za-z0-9_.-]{1,64}$",
                             description="music21 collection, e.g. essenFolksong or music21:bach")
    data_base64: str | None = Field(None, description="a zip of .mid files, base64")
    # None (absent): chosen from the corpus's size when the job starts (model/training/recipe.py)
    epochs: Annotated[int, Field(ge=1, le=500)] | None = TRAINING_DEFAULTS["epochs"]
    cell: Literal["lstm", "gru", "rnn"] = TRAINING_DEFAULTS["cell"]
    hidden_size: int = Field(TRAINING_DEFAULTS["hidden_size"], ge=4, le=1024)
    layers: int = Field(TRAINING_DEFAULTS["layers"], ge=1, le=4)
    embedding_dim: int = Field(TRAINING_DEFAULTS["embedding_dim"], ge=4, le=512)
    dropout: float = Field(TRAINING_DEFAULTS["dropout"], ge=0, lt=1)
    batch_size: Annotated[int, Field(ge=1, le=512)] | None = TRAINING_DEFAULTS["batch_size"]
    bptt: Annotated[int, Field(ge=4, le=2048)] | Literal["full"] = Field(
        TRAINING_DEFAULTS["bptt"], description="truncated BPTT length in tokens, or 'full'")
    clip: float = Field(TRAINING_DEFAULTS["clip"], gt=0, le=100, description="gradient norm clip")
    lr: Annotated[float, Field(gt=0, le=1)] | None = Field(TRAINING_DEFAULTS["lr"], description="learning rate")
    valid: float = Field(TRAINING_DEFAULTS["valid"], ge=0.01, le=0.5,
                         description="fraction of tunes held out for validation")
    max_minutes: float = Field(30.0, gt=0, le=MAX_TRAIN_MINUTES,
                               description="wall-clock budget (the service always sets one)")
    patience: Annotated[int, Field(ge=1, le=500)] | None = Field(
        TRAINING_DEFAULTS["patience"], description="epochs without a better validation loss before stopping early")
    transpose: Annotated[list[Annotated[int, Field(ge=-12, le=12)]], Field(min_length=2, max_length=2)] | None = Field(
        TRAINING_DEFAULTS["transpose"],
        description="[low, high] semitones: each training tune is transposed by a random shift in this range "
                    "every epoch; [0, 0] = off; absent: chosen from the corpus's size")
    short_term: bool = Field(TRAINING_DEFAULTS["short_term"],
                             description="fit the short-term (copy) model on the validation tunes at the end")
    remaining_inputs: bool = Field(TRAINING_DEFAULTS["remaining_inputs"], description="tell the network how many "
                                   "bars remain to the end of the tune, so it learns to end (and, with the end "
                                   "hidden for a share of tunes, also to end on its own in a length range)")
    max_remaining: int = Field(TRAINING_DEFAULTS["max_remaining"], ge=1, le=64,
                               description="the cap of the bars-remaining input")
    key_inputs: bool = Field(TRAINING_DEFAULTS["key_inputs"], description="tell the network each tune's key "
                             "(estimated from its notes); generation then tells it the requested key or draws one")
    end_weight: float = Field(TRAINING_DEFAULTS["end_weight"], gt=0, le=100,
                              description="loss weight of each tune's last bar (1: every token counts the same)")
    from_scratch: bool = Field(TRAINING_DEFAULTS["from_scratch"], description="train a fresh network instead of "
                               "fine-tuning the shipped model (which a job does where the model fits)")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="model name to register")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name):
        if name == SHIPPED_NAME:
            raise ValueError(f"name {SHIPPED_NAME!r} is reserved for the shipped model")
        return name

    @model_validator(mode="after")
    def _check_together(self):
        problems = []
        if self.transpose is not None and self.transpose[0] > self.transpose[1]:
            problems.append(("transpose", f"transpose must be [low, high] with low <= high, got {self.transpose}",
                             "two integers from -12 to 12, low first"))
        if (self.data is None) == (self.data_base64 is None):
            problems.append(("data", "give exactly one of data (a music21 collection) or an uploaded zip",
                             "a collection name, or a zip as multipart 'file' or 'data_base64'"))
        if problems:
            raise _Together(problems)
        return self


class _Together(ValueError):
    """Cross-field problems found after the single fields passed."""

    def __init__(self, problems):
        super().__init__("; ".join(p[1] for p in problems))
        self.problems = problems


def field_bounds(model: type[BaseModel]) -> dict[str, dict]:
    """{field: {"min": ..., "max": ...}}: the inclusive numeric bounds of a request model's fields, as its
    JSON schema states them (what the pages' inputs use, so a page and the API cannot disagree)."""
    bounds = {}
    for name, prop in model.model_json_schema()["properties"].items():
        found = {key: option[bound] for option in (prop, *prop.get("anyOf", ()))  # anyOf: a field that may be null
                 for key, bound in (("min", "minimum"), ("max", "maximum")) if bound in option}
        if found:
            bounds[name] = found
    return bounds


def validate_request(model: type[BaseModel], body) -> BaseModel:
    """Validate a decoded JSON body; raise RequestInvalid naming every bad field."""
    if not isinstance(body, dict):
        raise RequestInvalid([{"field": "(body)", "message": "the request body must be a JSON object",
                               "allowed": "a JSON object with the fields in the API docs"}])
    try:
        # JSON mode: strict types as JSON has them (arrays are tuples, integers are numbers)
        return model.model_validate_json(json.dumps(body))
    except _Together as exc:
        raise RequestInvalid([{"field": f, "message": m, "allowed": a} for f, m, a in exc.problems]) from None
    except ValidationError as exc:
        raise RequestInvalid(_describe(model, exc)) from None


def _describe(model, exc: ValidationError) -> list[dict]:
    schema = model.model_json_schema()
    fields, chosen = [], {}
    for error in exc.errors():
        if error["type"] == "value_error" and isinstance(error.get("ctx", {}).get("error"), _Together):
            for f, m, a in error["ctx"]["error"].problems:
                fields.append({"field": f, "message": m, "allowed": a})
            continue
        name = str(error["loc"][0]) if error["loc"] else "(body)"
        # a union reports every branch: keep the one that got deepest (the list item that failed)
        if name not in chosen or len(error["loc"]) > len(chosen[name]["loc"]):
            chosen[name] = error
    for name, error in chosen.items():
        if error["type"] == "extra_forbidden":
            fields.append({"field": name, "message": f"unknown field {name!r}",
                           "allowed": "one of: " + ", ".join(model.model_fields)})
            continue
        where = ".".join(str(part) for part in error["loc"] if not _is_branch(part))
        prop = schema.get("properties", {}).get(name, {})
        fields.append({"field": name, "message": f"{where}: {error['msg']}, got {_short(error.get('input'))}",
                       "allowed": allowed_text(prop, schema)})
    return fields


def _is_branch(part) -> bool:
    """Union branch labels in an error location ('str', 'list[...]', 'int', ...)."""
    return isinstance(part, str) and ("[" in part or part.startswith("constrained-")
                                      or part in ("str", "int", "float", "none", "bool"))


def allowed_text(prop: dict, root: dict) -> str:
    """A person's description of a JSON-schema property: 'number > 0 and <= 5', 'one of: ...'."""
    if "$ref" in prop:
        prop = root.get("$defs", {}).get(prop["$ref"].split("/")[-1], {})
    if "anyOf" in prop:
        parts = [allowed_text(p, root) for p in prop["anyOf"]]
        return " or ".join(p for p in parts if p)
    if "enum" in prop:
        return "one of: " + ", ".join(str(v) for v in prop["enum"])
    if "const" in prop:
        return repr(prop["const"])
    kind = prop.get("type")
    if kind in ("integer", "number"):
        bounds = []
        if "minimum" in prop:
            bounds.append(f">= {prop['minimum']}")
        if "exclusiveMinimum" in prop:
            bounds.append(f"> {prop['exclusiveMinimum']}")
        if "maximum" in prop:
            bounds.append(f"<= {prop['maximum']}")
        if "exclusiveMaximum" in prop:
            bounds.append(f"< {prop['exclusiveMaximum']}")
        return f"{kind} " + " and ".join(bounds) if bounds else kind
    if kind == "string":
        if "pattern" in prop:
            return f"string matching {prop['pattern']}"
        if "maxLength" in prop:
            return f"string of {prop.get('minLength', 0)} to {prop['maxLength']} characters"
        return "string"
    if kind == "array":
        if "prefixItems" in prop:
            return "[" + ", ".join(allowed_text(i, root) for i in prop["prefixItems"]) + "]"
        count = f"{prop.get('minItems', 0)} to {prop['maxItems']} " if "maxItems" in prop else ""
        return f"list of {count}items " + allowed_text(prop.get("items", {}), root)
    if kind == "null":
        return "null"
    return kind or ""


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_primer_midi(data: bytes, field: str = "primer"):
    """The primer file (or a melody to harmonize: `field`) through the one MIDI checker
    (model/representation/midi_check.py, which the worker and the CLI use too); returns its summary or
    raises RequestInvalid with the checker's reason."""
    try:
        return check_midi(data, field, max_bytes=params.MAX_PRIMER_BYTES)
    except MidiInvalid as exc:
        raise RequestInvalid([{"field": field, "message": str(exc),
                               "allowed": "a type 0 or 1 MIDI file with pitched notes (base64)"}]) from None


def check_fits_model(req: MelodyRequest, model: str, vocabulary: dict, primer_meters=()) -> None:
    """What only the model decides, checked before the job is queued: its pitch range, the meters its
    tokenizer knows (the request's and the primer's), that key, scale and range leave a pitch, and
    that it knows the style asked for. `vocabulary` is worker.checkpoint_vocabulary's answer. Raises
    RequestInvalid."""
    lo, hi, meters = vocabulary["min_pitch"], vocabulary["max_pitch"], list(vocabulary["meters"])
    problems = []
    for name in ("min_pitch", "max_pitch"):
        value = getattr(req, name)
        if value is not None and not lo <= value <= hi:
            problems.append((name, f"{name} must lie in model {model!r}'s range [{lo}, {hi}], got {value}",
                             f"integer from {lo} to {hi}"))
    if not problems and not GenerationParams(key=req.key, scale=req.scale, min_pitch=req.min_pitch,
                                             max_pitch=req.max_pitch).allowed_pitches(lo, hi):
        problems.append(("max_pitch", f"no {req.key} {req.scale or 'major'} pitch lies in "
                         f"[{req.min_pitch if req.min_pitch is not None else lo}, "
                         f"{req.max_pitch if req.max_pitch is not None else hi}]", "a wider range"))
    if req.meter is not None and req.meter not in meters:
        problems.append(("meter", f"meter {req.meter} is not one model {model!r} knows", "one of: " + ", ".join(meters)))
    unknown = [m for m in primer_meters if m not in meters]
    if unknown:
        problems.append(("primer", f"the primer's time signature {', '.join(unknown)} is not one model {model!r} "
                         "knows", "a primer in one of: " + ", ".join(meters)))
    styles = vocabulary["styles"]
    if req.style not in (None, ANY) and not styles:
        problems.append(("style", f"model {model!r} has no style input; ask for style null or {ANY!r} (its own mix), "
                         f"or choose a model that lists styles in GET /api/v1/models, got {req.style!r}",
                         f"null or {ANY}"))
    elif req.style not in (None, ANY, *styles):
        problems.append(("style", f"style {req.style!r} is not one model {model!r} knows (its styles: "
                         f"{', '.join(styles)})", "null or one of: " + ", ".join((*styles, ANY))))
    if problems:
        raise RequestInvalid([{"field": f, "message": m, "allowed": a} for f, m, a in problems])
