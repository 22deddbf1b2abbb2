"""One source for each rule: the API's request models, the command line and the pages take their
limits and defaults from the layer that owns them (model/generation/params.py, model/training/config.py), and
upload checks accept the MIDI files corpus reading reads."""
import base64
import dataclasses
import io
import re
import zipfile

import pytest

from model import MIDI_EXTENSIONS
from model.generation import params
from model.representation.corpora import EXTENSIONS
from model.generation.params import GenerationParams, ParameterError
from model.training.config import TrainConfig
from service.schemas import MelodyRequest, RequestInvalid, TrainingRequest, validate_request
from worker import MAX_TRAIN_MINUTES
from worker.uploads import UploadInvalid, extract_midi_zip

LIMITS = [("bars", params.MAX_BARS), ("top_k", params.MAX_TOP_K), ("count", params.MAX_COUNT),
          ("beam_width", params.MAX_BEAM_WIDTH), ("tempo", params.MAX_TEMPO),
          ("temperature", params.MAX_TEMPERATURE), ("max_pitch", params.MAX_PITCH)]


def api_accepts(**fields) -> bool:
    try:
        validate_request(MelodyRequest, fields)
        return True
    except RequestInvalid:
        return False


def model_accepts(**fields) -> bool:
    try:
        GenerationParams(**fields).validate()
        return True
    except ParameterError:
        return False


@pytest.mark.parametrize("field,highest", LIMITS)
def test_the_api_and_the_model_accept_the_same_range(field, highest):
    assert api_accepts(**{field: highest}) and model_accepts(**{field: highest})
    assert not api_accepts(**{field: highest + 1}) and not model_accepts(**{field: highest + 1})


def test_primer_limits_are_the_models():
    notes = [[60, i, 1] for i in range(params.MAX_PRIMER_NOTES)]
    assert api_accepts(primer=notes) and model_accepts(primer=notes)
    assert not api_accepts(primer=notes + [[60, 0, 1]]) and not model_accepts(primer=notes + [[60, 0, 1]])
    late = [[60, params.MAX_PRIMER_START_BEATS + 1, 1]]
    assert not api_accepts(primer=late) and not model_accepts(primer=late)
    # the base64 limit is the byte limit, encoded
    assert params.MAX_PRIMER_BASE64 == len(base64.b64encode(b"x" * params.MAX_PRIMER_BYTES))
    assert MelodyRequest.model_json_schema()["properties"]["primer"]["anyOf"][0]["maxLength"] == params.MAX_PRIMER_BASE64


def test_request_defaults_are_the_models_defaults():
    melody = MelodyRequest().model_dump()
    for f in dataclasses.fields(GenerationParams):
        assert melody[f.name] == f.default, f.name
    training = TrainingRequest(data="bach").model_dump()
    shared = [f for f in dataclasses.fields(TrainConfig) if f.name in training and f.name not in ("data", "max_minutes")]
    assert len(shared) >= 12
    for f in shared:
        assert training[f.name] == (list(f.default) if isinstance(f.default, tuple) else f.default), f.name


def test_generate_flags_default_to_the_models_defaults():
    from service.cli import build_parser
    args = build_parser().parse_args(["generate"])
    for f in dataclasses.fields(GenerationParams):
        if f.name != "primer":
            assert getattr(args, f.name) == f.default, f.name


def test_the_pages_take_limits_and_defaults_from_the_same_place(service_env, monkeypatch):
    from service import create_app
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    client = create_app().test_client()
    compose = client.get("/").get_data(as_text=True)
    assert re.search(rf'id="bars"[^>]* max="{params.MAX_BARS}"[^>]* value="{GenerationParams().bars}"', compose)
    assert re.search(rf'id="top_k"[^>]* max="{params.MAX_TOP_K}"', compose)
    assert re.search(rf'id="tempo"[^>]* min="{params.MIN_TEMPO}" max="{params.MAX_TEMPO}"', compose)
    train = client.get("/train").get_data(as_text=True)
    for name in ("hidden_size", "layers", "bptt", "embedding_dim"):
        assert re.search(rf'id="{name}"[^>]* value="{getattr(TrainConfig(), name)}"', train), name
    for name in ("epochs", "batch_size", "lr"):  # unset: chosen from the corpus's size (model/training/recipe.py)
        assert getattr(TrainConfig(), name) is None
        assert re.search(rf'id="{name}"[^>]* value="" placeholder="auto"', train), name
    bounds = TrainingRequest.model_json_schema()["properties"]
    for name in ("epochs", "hidden_size", "layers", "batch_size", "embedding_dim"):
        schema = bounds[name]["anyOf"][0] if "anyOf" in bounds[name] else bounds[name]  # anyOf: may be null (unset)
        low, high = schema["minimum"], schema["maximum"]
        assert re.search(rf'id="{name}"[^>]* min="{low}" max="{high}"', train), name
    assert re.search(rf'id="max_minutes"[^>]* max="{MAX_TRAIN_MINUTES}"', train)


def test_uploads_keep_the_midi_files_a_corpus_folder_reads():
    assert set(MIDI_EXTENSIONS) <= set(EXTENSIONS) and ".kar" in MIDI_EXTENSIONS
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for ext in (*MIDI_EXTENSIONS, ".txt"):
            zf.writestr(f"tune{ext}", b"not really MIDI")
    with pytest.raises(UploadInvalid) as err:      # every file is checked, the .txt skipped unread
        extract_midi_zip(io.BytesIO(archive.getvalue()), "/nonexistent")
    for ext in MIDI_EXTENSIONS:
        assert f"tune{ext}: tune{ext} is not a MIDI file" in str(err.value)
    assert "tune.txt: not a" in str(err.value)
