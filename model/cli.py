"""The model's commands of the ``tunesmith`` console script: train, generate, harmonize, styles,
evaluate, short-term, corpus info, diagnose.

``add_commands(subparsers)`` adds them to a parser; ``main(argv, mount=...)`` parses and runs them
together with the commands other layers mount (the console script itself is service/cli.py, which
mounts ``worker`` and ``serve``; ``python -m model.cli`` runs the model's commands alone). Bad
parameters exit with status 2 and the message of the ValueError that rejected them. Building the
parser imports no torch (the flags come from torch-free model/training/config.py and model/generation/params.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

OUTPUT_SUFFIXES = {".mid": "midi", ".midi": "midi", ".musicxml": "musicxml", ".xml": "musicxml", ".json": "json",
                   ".abc": "abc"}


def _transpose(text: str) -> tuple[int, int]:
    try:
        low, high = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"transpose must be LOW,HIGH semitones like -5,6, got {text!r}") from None
    return low, high


def _bptt(text: str):
    return text if text == "full" else int(text)


UNSET_TYPES = {"max_minutes": float, "init": str, "batch_size": int, "epochs": int, "lr": float, "lr_patience": int,
               "patience": int, "threads": int}  # the types of TrainConfig's fields whose default is None


def _add_train_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field (--hidden-size for hidden_size), with its default; ``skip``: fields
    left out (a command that trains per fold sets them itself), and then no --resume/--quiet either."""
    from model.training.config import TrainConfig
    from model.training.recipe import RECIPE_FIELDS
    helps = {"data": "corpus: music21:<collection>, music21:styles (every collection with a style), a folder of "
                     "MIDI/ABC/MusicXML/kern files, or several specs joined by +",
             "out": "model checkpoint to write (the resume state goes beside it as <stem>.resume.ckpt, which git ignores)",
             "bptt": "'full' (whole tunes) or k: truncated BPTT, gradients flow back at most k steps",
             "window": "tokens per lane per optimizer step (truncated BPTT)",
             "transpose": "LOW,HIGH semitone range of the training-split transposition, e.g. --transpose=-5,6 (0,0 = off)",
             "max_minutes": "time budget in minutes; the run stops resumable when it is spent",
             "position_inputs": "feed the position in the bar to the network",
             "remaining_inputs": "feed the bars remaining to the end of the tune to the network",
             "max_remaining": "cap of the bars-remaining input",
             "remaining_dropout": "share of training tunes read with their end unknown (so ranges of bars can end freely)",
             "key_inputs": "feed the tune's key (estimated from its notes) to the network; generation tells it the requested key or draws one",
             "key_dropout": "share of training tunes read with their key unknown",
             "form_inputs": "feed each bar's form label (repeat of an earlier bar: exact, rhythm, variant or new, and how "
                            "many bars back) to the network; generation tells it the request's form plan",
             "form_dropout": "share of training tunes read with their form unknown",
             "form_bar_dropout": "in the other tunes, the share of bars read with their form label unknown",
             "chord_inputs": "feed the chord under each step (the tune's own, estimated) to the network; generation "
                             "tells it the requested chords",
             "chord_dropout": "share of training tunes read with their chords unknown",
             "style_inputs": "feed the tune's style (german, chinese, irish: its collection) to the network; "
                             "generation tells it the requested style",
             "style_dropout": "share of training tunes read with their style unknown",
             "end_weight": "loss weight of each tune's last bar, its tokens after the last barline (1 = none)",
             "init": "start from this checkpoint's network weights (fine-tuning; its tokenizer and network settings "
                     "must be this run's; default: the shipped model where it fits)",
             "from_scratch": "train a fresh network instead of fine-tuning the shipped model",
             "sampled_inputs": "parallel scheduled sampling: share of note/rest/hold inputs replaced by the network's "
                               "own draw at that step, from a first pass without gradients (0 = off)",
             "patience": "epochs without a better validation loss before stopping early",
             "lr_patience": "epochs without a better validation loss before the learning rate is halved",
             "cell": "recurrent cell: lstm, gru or rnn", "backend": "cells (model.network.cells, our own), fused (torch.nn.LSTM/GRU/RNN) or auto (a fixed rule: "
             "fused LSTM, our GRU and RNN)",
             "threads": "torch threads (default: the cores not busy when training starts)", "valid": "validation fraction of the tunes", "test": "test fraction"}
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag, default = "--" + f.name.replace("_", "-"), f.default
        shown = "chosen from the corpus's size" if f.name in RECIPE_FIELDS else default
        kwargs = {"default": default, "help": helps.get(f.name, f.name.replace("_", " ")) + f" (default: {shown})"}
        if f.name == "transpose":
            kwargs["type"] = _transpose
        elif f.name == "bptt":
            kwargs["type"] = _bptt
        elif isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.name in UNSET_TYPES:
            kwargs["type"] = UNSET_TYPES[f.name]
        else:
            kwargs["type"] = type(default)
        parser.add_argument(flag, **kwargs)
    if skip:
        return
    parser.add_argument("--resume", action="store_true", help="continue from the resume state beside --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_train(args) -> int:
    from model.training.config import TrainConfig
    from model.training.trainer import train
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**fields)
    result = train(config, resume=args.resume, show_progress=not args.quiet)
    print(json.dumps({k: result[k] for k in ("checkpoint", "stopped", "recipe", "metrics")}, indent=2))
    if result["stopped"] == "interrupted":
        print(f"interrupted: continue with the same command and --resume ({config.resume_path()})", file=sys.stderr)
        return 130
    return 0


def _primer(text: str | None):
    if text is None:
        return None
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"primer must be a MIDI file or a JSON list [[pitch, start_beats, duration_beats]], "
                             f"got invalid JSON ({e})") from None
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"primer must be a MIDI file or a JSON note list, got {text!r} (no such file)")
    from model.representation.midi_check import check_midi
    from model.generation.params import MAX_PRIMER_BYTES
    data = path.read_bytes()
    check_midi(data, "primer", max_bytes=MAX_PRIMER_BYTES)   # the check the service makes (a MidiInvalid)
    return data


def _span(text: str | None) -> dict | None:
    """--regenerate FIRST-LAST (bars of the primer, 1-based, inclusive; one bar: N) -> the API's span."""
    if text is None:
        return None
    first, _, last = text.partition("-")
    try:
        return {"from_bar": int(first), "to_bar": int(last or first)}
    except ValueError:
        raise ValueError(f"regenerate must be bars like 5-8 (or one bar, 5), got {text!r}") from None


def cmd_generate(args) -> int:
    from model.generation.params import GenerationParams
    out = Path(args.out)
    kind = OUTPUT_SUFFIXES.get(out.suffix.lower())
    if kind is None:
        raise ValueError(f"out must end in one of {', '.join(OUTPUT_SUFFIXES)}, got {args.out!r}")
    params = GenerationParams(
        bars=args.bars, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        key=args.key, scale=args.scale, tempo=args.tempo, meter=args.meter, primer=_primer(args.primer),
        include_primer=args.include_primer, count=args.count, beam_width=args.beam_width,
        min_pitch=args.min_pitch, max_pitch=args.max_pitch, avoid_repetition=args.avoid_repetition,
        short_term=args.short_term, min_bars=args.min_bars, max_bars=args.max_bars, cadence=args.cadence,
        redraw_degenerate=args.redraw_degenerate, tonic_pull=args.tonic_pull, regenerate=_span(args.regenerate),
        chords=args.chords, chord_tones=args.chord_tones,
        form=args.form, phrase_bars=args.phrase_bars, form_strict=args.form_strict, pickup=args.pickup,
        style=args.style)
    params.validate()  # before loading the model: a bad flag fails fast
    import torch
    torch.set_num_threads(1)  # one melody batch is too small to gain from more threads
    from model.generation.sampling import Generator
    generation = Generator(args.model).generate(params)
    written = []
    for m in generation.melodies:
        path = out if len(generation.melodies) == 1 else out.with_name(f"{out.stem}-{m.index + 1}{out.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if params.chords is not None or args.harmonize:   # the given chords, else estimated ones
            from model.generation.accompaniment import harmonized_bytes, melody_chords
            score = m.tokenizer.score(m.tokens, qpm=m.tempo)
            path.write_bytes(harmonized_bytes(kind, score, melody_chords(score, params), m.to_json()))
        elif kind == "midi":
            path.write_bytes(m.midi_bytes())
        elif kind == "musicxml":
            path.write_bytes(m.musicxml_bytes())
        elif kind == "abc":
            from model.generation.accompaniment import key_flats
            from model.representation.abc import abc_text
            score = m.tokenizer.score(m.tokens, qpm=m.tempo)
            path.write_text(abc_text(score, flats=key_flats(score)))
        else:
            path.write_text(json.dumps(m.to_json(), indent=1))
        written.append({"path": str(path), "notes": len(m.notes)})
    print(json.dumps({"model": generation.model, "seed": generation.seed, "files": written}))
    return 0


def cmd_harmonize(args) -> int:
    out = Path(args.out)
    kind = OUTPUT_SUFFIXES.get(out.suffix.lower())
    if kind is None:
        raise ValueError(f"out must end in one of {', '.join(OUTPUT_SUFFIXES)}, got {args.out!r}")
    from model.generation import accompaniment
    from model.representation.tokens import MelodyTokenizer
    from model.representation.written_chords import SCORE_SUFFIXES, read_midi_melody, read_score_melody
    path = Path(args.melody)
    if not path.is_file():
        raise ValueError(f"melody must be a MIDI, MusicXML or ABC file, got {args.melody!r} (no such file)")
    tok = MelodyTokenizer()
    if path.suffix.lower() in SCORE_SUFFIXES:                # a score keeps the chord symbols it carries
        ids, qpm, written = read_score_melody(path, tok)
    else:
        from model.generation.params import MAX_PRIMER_BYTES   # the bounds a primer has
        (ids, qpm), written = read_midi_melody(path.read_bytes(), tok, MAX_PRIMER_BYTES), []
    score = tok.score(ids, qpm=qpm)
    spans = accompaniment.written_spans(score, written) if written else accompaniment.score_chords(score)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(accompaniment.harmonized_bytes(kind, score, spans))
    chords = accompaniment.chords_json(score, spans)
    print(json.dumps({"file": str(out), "chords": " ".join(c["chord"] for c in chords)}))
    return 0


def cmd_styles(args) -> int:
    """The model's styles, one a line with its description, or that it has none."""
    from model.network.checkpoint import load_checkpoint
    from model.representation.styles import ANY, STYLE_DESCRIPTIONS
    model, _, _ = load_checkpoint(args.model)
    name = args.model or "the shipped model"
    if not model.config.style_dim:
        print(f"{name} has no style input: it writes in the mix of traditions it was trained on "
              f"(--style {ANY}, or no --style, is all it takes)")
        return 0
    width = max(len(style) for style in (*model.config.styles, ANY))
    for style in model.config.styles:
        print(f"{style:<{width}}  {STYLE_DESCRIPTIONS.get(style, '')}".rstrip())
    print(f"{ANY:<{width}}  no style asked for: the model's own mix (the default)")
    return 0


def cmd_evaluate(args) -> int:
    if args.folds is not None:
        return cmd_cross_validate(args)
    from model.evaluation.report import evaluate_report
    result = evaluate_report(args.model, args.data, args.split, samples=args.samples,
                             ngram_model=None if args.ngram == "none" else args.ngram, ngram_out=args.ngram_out,
                             seed=args.seed, progress=not args.quiet,
                             ngram_orders=range(3, args.ngram_max_order + 1), short_term=args.short_term)
    _report({**result, "model": str(args.model or "default"), "command": _command_line()}, args.out)
    return 0


def _command_line() -> str:
    """The command that produced a report (stored beside its figures)."""
    return "tunesmith " + " ".join(sys.argv[1:])


def _report(result: dict, out: str | None) -> None:
    """Print a JSON report; with ``out``, also write it there (docs/results/*.json back the model card)."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        from model.representation.files import atomic_write
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(out), (text + "\n").encode())


def cmd_cross_validate(args) -> int:
    from model.representation.corpora import load_corpus
    from model.evaluation.folds import cross_validate
    from model.representation.tokens import TokenizerConfig
    from model.training.config import TrainConfig
    if not args.data:
        raise ValueError("data must be given with --folds (a corpus spec or one file)")
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)
              and f.name not in ("data", "out", "seed", "valid", "test")}
    config = TrainConfig(data=args.data, **fields)
    corpus = load_corpus(args.data, TokenizerConfig(steps_per_quarter=config.steps_per_quarter),
                         progress=not args.quiet)
    report = cross_validate(corpus, args.folds, config, valid=args.fold_valid, out_dir=args.folds_dir,
                            progress=not args.quiet)
    _report({"data": args.data, "train_config": dataclasses.asdict(config), **report,
             "command": _command_line()}, args.out)
    return 0


def cmd_short_term(args) -> int:
    from model.evaluation.report import add_short_term
    print(json.dumps(add_short_term(args.model, args.data, progress=not args.quiet), indent=2))
    return 0


def cmd_corpus_info(args) -> int:
    from model.representation.corpora import corpus_info
    print(json.dumps(corpus_info(args.data), indent=2, default=str))
    return 0


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    """--data and --quiet, for the commands that score or fit on a checkpoint's corpus."""
    p.add_argument("--data", default=None, help="corpus spec (default: the one the model was trained on)")
    p.add_argument("--quiet", action="store_true", help="no progress bar while parsing the corpus")


def _add_generate_flags(p: argparse.ArgumentParser) -> None:
    """generate's flags: GenerationParams' defaults, and the limits model/generation/params.py defines."""
    from model import DEFAULT_MODEL_PATH
    from model.generation import params
    from model.representation.styles import ANY, STYLES
    d = params.GenerationParams()
    p.add_argument("--model", default=None, help=f"checkpoint (default: the shipped model {DEFAULT_MODEL_PATH})")
    p.add_argument("--out", default="melody.mid", help="output file: .mid/.midi, .musicxml/.xml, .abc or .json; "
                   "with --count > 1, name-1.mid, name-2.mid, ... (default: melody.mid)")
    p.add_argument("--bars", type=int, default=d.bars,
                   help=f"bars to generate after the primer (1..{params.MAX_BARS}, default {d.bars})")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help=f"sampling temperature (0, {params.MAX_TEMPERATURE:g}] (default: the style's, "
                   f"{', '.join(f'{k} {v:g}' for k, v in params.STYLE_TEMPERATURES.items())}, else 1)")
    p.add_argument("--top-k", type=int, default=d.top_k,
                   help=f"keep the k most likely tokens, 0..{params.MAX_TOP_K}; 0 = all (default {d.top_k})")
    p.add_argument("--top-p", type=float, default=d.top_p, help=f"nucleus sampling mass (0, 1] (default {d.top_p})")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed; same model+flags+seed = same file")
    p.add_argument("--key", default=d.key, help="tonic for the scale constraint: C, C#, Db, ..., B")
    p.add_argument("--scale", default=d.scale, help=", ".join(params.SCALES) + " (default major with --key)")
    p.add_argument("--tempo", type=float, default=d.tempo, help=f"quarter notes per minute "
                   f"{params.MIN_TEMPO}..{params.MAX_TEMPO} (default: the primer's tempo, else {params.DEFAULT_TEMPO:g})")
    p.add_argument("--meter", default=d.meter, help="meter such as 3/4 (default: the primer's, else 4/4)")
    p.add_argument("--primer", default=None, help="a MIDI file, or a JSON note list '[[60, 0, 1], [62, 1, 0.5]]' "
                   f"of [pitch, start_beats, duration_beats] (at most {params.MAX_PRIMER_BYTES} bytes or "
                   f"{params.MAX_PRIMER_NOTES} notes)")
    p.add_argument("--include-primer", action=argparse.BooleanOptionalAction, default=d.include_primer,
                   help="put the primer at the start of the output (default: yes)")
    p.add_argument("--count", type=int, default=d.count,
                   help=f"melodies to generate in one batch 1..{params.MAX_COUNT} (default {d.count})")
    p.add_argument("--beam-width", type=int, default=d.beam_width,
                   help=f"beam search width 1..{params.MAX_BEAM_WIDTH}; 1 = sampling (default {d.beam_width})")
    p.add_argument("--min-pitch", type=int, default=d.min_pitch, help="lowest MIDI pitch allowed")
    p.add_argument("--max-pitch", type=int, default=d.max_pitch, help="highest MIDI pitch allowed")
    p.add_argument("--avoid-repetition", action=argparse.BooleanOptionalAction, default=d.avoid_repetition,
                   help="down-weight two-bar one-pitch loops and silences (default: yes)")
    p.add_argument("--short-term", action=argparse.BooleanOptionalAction, default=d.short_term,
                   help="mix in the model's short-term model, which copies from the melody so far, when it has "
                   "one (default: yes; --no-short-term = the network alone)")
    p.add_argument("--min-bars", type=int, default=d.min_bars, help="with --max-bars: the tune may end at any "
                   "barline from this bar on, where the model chooses (default 1)")
    p.add_argument("--max-bars", type=int, default=d.max_bars, help=f"a length range instead of --bars "
                   f"(at most {params.MAX_BARS}): the tune ends where the model ends it, at the latest here")
    p.add_argument("--chords", default=None, help="a progression over the generated bars, e.g. 'G C | D7 G' "
                   "(bars separated by |, chords inside a bar split it evenly; repeats): strong beats lean to "
                   "its chord tones, and the files carry it (chord symbols, a MIDI accompaniment track)")
    p.add_argument("--chord-tones", choices=params.CHORD_TONES, default=d.chord_tones, help="with --chords: "
                   "strict = notes starting on strong beats are chord tones; soft = they lean to them by "
                   "a few nats; none = the chords only go into the files (default soft)")
    p.add_argument("--harmonize", action="store_true", help="write estimated chords (or --chords) into the "
                   "files: MusicXML chord symbols, a MIDI accompaniment track, JSON chords")
    p.add_argument("--cadence", choices=params.CADENCES, default=d.cadence, help="tonic: the last note is the "
                   "tonic of --key (or the primer's key, or the melody's estimated key), on a strong beat, at "
                   "least a beat long, held to the end of the last bar (default none)")
    p.add_argument("--tonic-pull", type=float, default=d.tonic_pull, help="nats added to the tonic (of --key, the "
                   "primer's key or the melody's estimated key) at the strong beats of the last bar, and to ending "
                   f"after a bar that cadences in a --min-bars/--max-bars range: a soft ending, 0..{params.MAX_TONIC_PULL:g}; "
                   f"0 leaves the ending to the model (default {d.tonic_pull:g})")
    p.add_argument("--regenerate", default=None, metavar="FIRST-LAST", help="with --primer: regenerate bars "
                   "FIRST..LAST of the primer in place (1-based, inclusive, e.g. 5-8), keeping every note outside "
                   "them; --count gives alternatives, --bars is ignored")
    p.add_argument("--form", default=d.form, help="sections such as AABB, ABAC or AA'BA (letters A-H, ' for a "
                   "varied repeat): a repeated section copies the first one (its last bar only the rhythm; "
                   "primed: only the rhythm, the last bar free); 'none' = no form (default: the form of a "
                   "training tune of the same meter and length, drawn with --seed)")
    p.add_argument("--phrase-bars", type=int, default=d.phrase_bars, help="bars a section (default: bars / sections)")
    p.add_argument("--form-strict", action=argparse.BooleanOptionalAction, default=d.form_strict,
                   help="repeated sections copied note for note, primed ones and last bars too (default: no)")
    p.add_argument("--pickup", action=argparse.BooleanOptionalAction, default=d.pickup, help="--pickup: begin "
                   "with a partial bar (an anacrusis); --no-pickup: the first note on beat one (default: free, "
                   "or the sampled form's; never a whole bar of rests)")
    p.add_argument("--style", default=d.style, help="the tradition to write in, one the model knows (`tunesmith "
                   "styles --model PATH` lists them): " + ", ".join(STYLES) + f"; {ANY} or no --style (the default): "
                   "no style asked for, the model's own mix")
    p.add_argument("--redraw-degenerate", action=argparse.BooleanOptionalAction, default=d.redraw_degenerate,
                   help=f"the quality gate: redraw a degenerate melody, at most {params.MAX_REDRAWS} times, with "
                   "seeds derived from --seed (default: yes)")


def add_commands(sub) -> None:
    """Add the model's commands to a `tunesmith` parser's subcommands."""
    p = sub.add_parser("train", help="train a melody model", description="Train a melody network on a corpus.")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="generate melodies to MIDI, MusicXML or JSON",
                       description="Generate melodies with a trained model.")
    _add_generate_flags(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("harmonize", help="chords and an accompaniment under a melody",
                       description="Estimate the chords under a MIDI melody (one per bar or half bar, an HMM "
                       "fitted on Bach's chorales: model/representation/harmony.py) and write them: MIDI with "
                       "an accompaniment on a second track, MusicXML or ABC with chord symbols, or JSON.")
    p.add_argument("melody", help="a MIDI file (the bounds of a primer), or a MusicXML or ABC score: the chord "
                   "symbols a score carries are kept, not estimated")
    p.add_argument("--out", required=True, help="output file: .mid/.midi, .musicxml/.xml, .abc or .json")
    p.set_defaults(func=cmd_harmonize)

    p = sub.add_parser("styles", help="the traditions a model writes in (generate --style)",
                       description="List the styles a model knows, with what each was trained on, or say that "
                       "it has no style input (then --style takes only 'any').")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.set_defaults(func=cmd_styles)

    p = sub.add_parser("evaluate", help="score a model on a corpus split (JSON)",
                       description="Print, as JSON, a model's nats per token, bits per note and pitch bits per note on a "
                       "split, the same for a Kneser-Ney n-gram reference, and statistics of generated melodies "
                       "against the split.")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    _add_data_flags(p)
    p.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split to score (default test)")
    p.add_argument("--samples", type=int, default=100, help="melodies to generate and compare with the split "
                   "(histogram overlaps, in-scale ratio, degenerate share); 0 = none (default 100)")
    p.add_argument("--ngram", default="auto", help="n-gram reference scored on the same tunes: 'auto' (Kneser-Ney "
                   "fitted on the train split, best order on valid), a saved .npz, or 'none' (default auto)")
    p.add_argument("--ngram-max-order", type=int, default=24, help="with --ngram auto, try orders 3..N on the "
                   "valid split (default 24: on 16th-note tokens long contexts keep helping)")
    p.add_argument("--ngram-out", default=None, help="save the n-gram model used to this .npz file")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated melodies (default 0)")
    p.add_argument("--short-term", action=argparse.BooleanOptionalAction, default=True,
                   help="score and sample the network with its short-term model, when it has one (default: yes); "
                   "--no-short-term: the network alone")
    p.add_argument("--folds", type=int, default=None, help="K-fold cross-validation by tune instead: per fold, "
                   "fine-tune --init (default: the shipped model) on the other folds, refused if it saw any evaluated "
                   "tune (transfer), or with --from-scratch train a fresh model on them (equal data); the training "
                   "flags below apply; score each held-out fold and print pooled and per-fold bits per note; --data "
                   "may be one file, e.g. music21:essenFolksong/kinder0.abc")
    p.add_argument("--fold-valid", type=float, default=0.1, help="with --folds: share of the training folds' tunes "
                   "used for validation and early stopping (default 0.1)")
    p.add_argument("--folds-dir", default=None, help="with --folds: keep the fold checkpoints in this folder")
    p.add_argument("--out", default=None, help="also write the JSON report to this file (e.g. docs/results/NAME.json)")
    _add_train_flags(p.add_argument_group("training flags (with --folds)"), skip=("data", "out", "seed", "valid", "test", "short_term"))
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("short-term", help="fit a model's short-term model on its valid split",
                       description="Fit the short-term copy model (model/network/shortterm.py) to a checkpoint's network on "
                       "the valid split of its corpus and store it in the checkpoint, as `tunesmith train` does at "
                       "the end of a run. Prints the parameters and the valid nats/token without and with it.")
    p.add_argument("--model", required=True, help="checkpoint to update in place")
    _add_data_flags(p)
    p.set_defaults(func=cmd_short_term)

    p = sub.add_parser("corpus", help="corpus tools", description="Corpus tools.")
    corpus_sub = p.add_subparsers(dest="corpus_command", required=True, metavar="SUBCOMMAND")
    q = corpus_sub.add_parser("info", help="tunes, notes, tokens and failures per split",
                              description="Print tunes, notes, tokens and failures per split, as JSON.")
    q.add_argument("--data", required=True, help="music21:<collection> or a folder")
    q.set_defaults(func=cmd_corpus_info)

    p = sub.add_parser("diagnose", help="gradient-by-distance and clipping plots (see model/training/diagnostics.py)",
                       description="Measure how the gradient of the loss reaches back through time for the vanilla "
                       "RNN, GRU and LSTM, and the gradient norms with and without clipping; writes plots. "
                       "Options go to `python -m model.training.diagnostics` (try `tunesmith diagnose --help`).",
                       add_help=False)
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of python -m model.training.diagnostics")


def build_parser(mount=()) -> argparse.ArgumentParser:
    """The `tunesmith` parser: the model's commands, and those each function in `mount` adds."""
    parser = argparse.ArgumentParser(prog="tunesmith", description="Melody generation with an LSTM on MIDI tokens.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub)
    for add in mount:
        add(sub)
    return parser


def main(argv=None, mount=()) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["diagnose"]:  # its options belong to model.training.diagnostics, --help included
        from model.training.diagnostics import main as diagnose_main
        return diagnose_main(argv[1:])
    args = build_parser(mount).parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # a bad parameter or input: say what and what is allowed
        print(f"tunesmith {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"tunesmith {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tunesmith {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
