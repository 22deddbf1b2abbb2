"""Tests for model/cli.py: the model's commands of the tunesmith console script (service/cli.py
mounts them) end to end on tiny models and files."""
import json

import mido
import pytest
import torch

from model.network.checkpoint import read_checkpoint, save_checkpoint
from model.representation.corpora import split_of
from model.network.melody import MelodyNetwork, NetworkConfig
from model.representation.keys import SCALES
from model.representation.tokens import MelodyTokenizer, Note
from model.representation.parsing import encode_midi
from service.cli import main

TOK = MelodyTokenizer()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=16, embedding_dim=8,
                                      position_dim=4, max_positions=TOK.max_bar_steps))
    return str(save_checkpoint(tmp_path_factory.mktemp("cli") / "tiny.pt", net, TOK))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def midi_pitches(path):
    midi = mido.MidiFile(path)
    return [m.note for m in mido.merge_tracks(midi.tracks) if m.type == "note_on" and m.velocity > 0]


def test_generate_midi_musicxml_and_json_agree(capsys, tmp_path, checkpoint):
    common = ["--model", checkpoint, "--seed", 4, "--bars", 4, "--key", "G", "--scale", "major", "--tempo", 100]
    code, out, _ = run(capsys, "generate", *common, "--out", tmp_path / "a.mid")
    assert code == 0 and json.loads(out)["seed"] == 4
    pitches = midi_pitches(tmp_path / "a.mid")
    assert pitches and all((p - 7) % 12 in SCALES["major"] for p in pitches)

    assert run(capsys, "generate", *common, "--out", tmp_path / "a.json")[0] == 0
    melody = json.loads((tmp_path / "a.json").read_text())
    assert [n["pitch"] for n in melody["notes"]] == pitches and melody["tempo"] == 100

    assert run(capsys, "generate", *common, "--out", tmp_path / "a.musicxml")[0] == 0
    from music21 import converter
    score = converter.parse(str(tmp_path / "a.musicxml")).stripTies()
    assert [n.pitch.midi for n in score.flatten().notes] == pitches


def test_generate_count_primer_and_range(capsys, tmp_path, checkpoint):
    primer = tmp_path / "primer.mid"
    primer.write_bytes(TOK.decode_midi_bytes(TOK.encode_notes([Note(72, 0, 4), Note(74, 4, 8)])))
    code, out, _ = run(capsys, "generate", "--model", checkpoint, "--seed", 1, "--count", 3, "--primer", primer,
                       "--min-pitch", 55, "--max-pitch", 67, "--out", tmp_path / "b.mid")
    assert code == 0 and len(json.loads(out)["files"]) == 3
    for i in (1, 2, 3):
        pitches = midi_pitches(tmp_path / f"b-{i}.mid")
        assert pitches[:2] == [72, 74] and all(55 <= p <= 67 for p in pitches[2:])
    code, _, _ = run(capsys, "generate", "--model", checkpoint, "--seed", 1, "--primer", "[[60, 0, 1]]",
                     "--no-include-primer", "--bars", 2, "--out", tmp_path / "c.mid")
    assert code == 0 and TOK.bar_count(encode_midi(TOK, str(tmp_path / "c.mid"))) == 2


def test_short_term_fits_into_the_checkpoint_and_generate_can_leave_it_out(capsys, tmp_path):
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=16, embedding_dim=8))
    folder = tmp_path / "midi"
    folder.mkdir()
    for i in range(40):  # a phrase played twice per tune: the short-term model has something to copy
        phrase = [Note(60 + (i * 7 + k * 5) % 12, 2 * k, 2 * k + 2) for k in range(8)]
        notes = phrase + [Note(n.pitch, n.start + 16, n.end + 16) for n in phrase]
        (folder / f"t{i}.mid").write_bytes(TOK.decode_midi_bytes(TOK.encode_notes(notes)))
    model = save_checkpoint(tmp_path / "m.pt", net, TOK)
    code, out, _ = run(capsys, "short-term", "--model", model, "--data", folder, "--quiet")
    assert code == 0
    report = json.loads(out)
    assert read_checkpoint(model)["short_term"] == report["short_term"]
    assert report["valid"]["mixture_nats_per_token"] < report["valid"]["network_nats_per_token"]
    files = []
    for flag in ("--short-term", "--no-short-term"):
        files.append(tmp_path / f"{flag}.mid")
        assert run(capsys, "generate", "--model", model, "--seed", 3, "--bars", 8, flag, "--out", files[-1])[0] == 0
    assert midi_pitches(files[0]) != midi_pitches(files[1])


def test_generate_a_form_with_a_pickup(capsys, tmp_path, checkpoint):
    code, _, _ = run(capsys, "generate", "--model", checkpoint, "--seed", 2, "--bars", 8, "--form", "AB",
                     "--phrase-bars", 4, "--form-strict", "--pickup", "--out", tmp_path / "f.json")
    assert code == 0
    tokens = [TOK.ids[t] for t in json.loads((tmp_path / "f.json").read_text())["tokens"]]
    from model.representation.form import has_pickup, tune_bars
    bars = tune_bars(tokens, TOK)
    assert has_pickup(bars, TOK) and bars[4:] != bars[:4]
    code, _, _ = run(capsys, "generate", "--model", checkpoint, "--seed", 2, "--bars", 8, "--form", "AA",
                     "--form-strict", "--no-pickup", "--out", tmp_path / "g.json")
    bars = tune_bars([TOK.ids[t] for t in json.loads((tmp_path / "g.json").read_text())["tokens"]], TOK)
    assert code == 0 and bars[4:] == bars[:4] and TOK.pitch_of(bars[0][0]) is not None


def test_same_seed_same_file(capsys, tmp_path, checkpoint):
    for name in ("x.mid", "y.mid"):
        assert run(capsys, "generate", "--model", checkpoint, "--seed", 9, "--out", tmp_path / name)[0] == 0
    assert (tmp_path / "x.mid").read_bytes() == (tmp_path / "y.mid").read_bytes()


@pytest.mark.parametrize("flags,message", [
    (["--temperature", "9"], "temperature must be null or in (0, 5], got 9"),
    (["--key", "H"], "key must be null or one of C, C#"),
    (["--bars", "0"], "bars must be an integer in [1, 256], got 0"),
    (["--out", "x.wav"], "out must end in one of .mid"),
    (["--primer", "missing.mid"], "primer must be a MIDI file or a JSON note list"),
    (["--primer", "[[60, 0]]"], "primer[0] must be [pitch 0..127"),
    (["--form", "ABZ"], "form must be null, 'none', or 1 to 64 section letters A-H"),
    (["--form", "AABB", "--bars", "6"], "phrase_bars must be given when bars (6) is not a multiple"),
    (["--style", "klezmer"], "style must be null or one of german, chinese, irish, any, got 'klezmer'"),
])
def test_bad_generate_flags_exit_2_with_the_reason(capsys, tmp_path, checkpoint, flags, message):
    code, _, err = run(capsys, "generate", "--model", checkpoint, "--out", tmp_path / "z.mid", *flags)
    assert code == 2 and message in err


def test_styles_lists_a_models_styles_and_generate_asks_for_one(capsys, tmp_path, tiny_style_checkpoint):
    from model.representation.styles import STYLE_DESCRIPTIONS
    code, out, _ = run(capsys, "styles", "--model", tiny_style_checkpoint)
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == ["german", "chinese", "any"]
    assert lines[0].endswith(STYLE_DESCRIPTIONS["german"]) and lines[1].endswith(STYLE_DESCRIPTIONS["chinese"])
    code, out, _ = run(capsys, "generate", "--model", tiny_style_checkpoint, "--style", "chinese", "--bars", 2,
                       "--seed", 3, "--out", tmp_path / "s.mid")
    assert code == 0 and json.loads(out)["files"][0]["notes"] > 0
    # the flag reaches the generator, which checks it against the model's own styles
    code, _, err = run(capsys, "generate", "--model", tiny_style_checkpoint, "--style", "irish", "--out",
                       tmp_path / "t.mid")
    assert code == 2 and "style must be german, chinese, any (this model's styles), got 'irish'" in err


def test_styles_says_when_a_model_has_none_and_generate_refuses_one(capsys, tmp_path, checkpoint):
    code, out, _ = run(capsys, "styles", "--model", checkpoint)
    assert code == 0 and f"{checkpoint} has no style input" in out
    code, _, err = run(capsys, "generate", "--model", checkpoint, "--style", "german", "--out", tmp_path / "u.mid")
    assert code == 2 and "style must be null or 'any': this model has no style input, got 'german'" in err
    assert run(capsys, "generate", "--model", checkpoint, "--style", "any", "--bars", 2, "--out", tmp_path / "v.mid")[0] == 0


def test_missing_model_is_reported(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--model", tmp_path / "nope.pt", "--out", tmp_path / "z.mid")
    assert code == 1 and "no checkpoint at" in err


@pytest.mark.parametrize("argv,expected", [
    (["--help"], "generate"), (["train", "--help"], "--hidden-size"), (["generate", "--help"], "--top-p"),
    (["evaluate", "--help"], "--split"), (["corpus", "info", "--help"], "--data"), (["serve", "--help"], "service"),
    (["worker", "--help"], "worker"), (["styles", "--help"], "--model"),
])
def test_help_on_every_command(capsys, argv, expected):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0 and expected in capsys.readouterr().out


def test_train_resume_evaluate_and_corpus_info_on_a_midi_folder(capsys, tmp_path):
    data = tmp_path / "midi"
    data.mkdir()
    names = [f"tune{i}.mid" for i in range(14)]
    assert {split_of(f"{n}#0", 0, 0.3, 0.2) for n in names} == {"train", "valid", "test"}
    for i, name in enumerate(names):
        notes = [Note(60 + (i + k * 3) % 12, 2 * k, 2 * k + 2) for k in range(12)]
        (data / name).write_bytes(TOK.decode_midi_bytes(TOK.encode_notes(notes, "3/4" if i % 2 else "4/4")))
    out = tmp_path / "model.pt"
    flags = ["--data", data, "--out", out, "--hidden-size", 8, "--layers", 1, "--embedding-dim", 4, "--batch-size", 2,
             "--bptt", 8, "--window", 16, "--threads", 1, "--valid", 0.3, "--test", 0.2, "--transpose=-1,1",
             "--quiet"]
    code, stdout, _ = run(capsys, "train", *flags, "--epochs", 1)
    assert code == 0 and json.loads(stdout)["stopped"] == "epochs"
    code, stdout, _ = run(capsys, "train", *flags, "--epochs", 2, "--resume")
    assert code == 0 and len(read_checkpoint(out)["history"]) == 2

    code, stdout, _ = run(capsys, "evaluate", "--model", out, "--split", "test", "--quiet")
    result = json.loads(stdout)
    assert code == 0 and result["split"] == "test" and result["data"] == str(data)
    assert 0 < result["nats_per_token"] < 5 and result["tunes"] == sum(
        split_of(f"{n}#0", 0, 0.3, 0.2) == "test" for n in names)

    code, stdout, _ = run(capsys, "corpus", "info", "--data", data)
    assert code == 0 and json.loads(stdout)["tunes"] == 14

    code, _, err = run(capsys, "train", *flags, "--dropout", 2)
    assert code == 2 and "dropout must be in [0, 1), got 2.0" in err
