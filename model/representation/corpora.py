"""Corpora: parse a collection of tunes into token arrays once, cache them, split them by tune.

``load_corpus(spec)`` accepts ``music21:<collection>`` (any collection bundled with music21:
``essenFolksong``, ``bach`` = the soprano line of the chorales, ``ryansMammoth``, ``oneills1850``
...) or a folder searched recursively for .mid/.midi/.kar/.abc/.xml/.mxl/.musicxml/.krn files. An
ABC file is split into its tunes (``X:`` headers, file header fields copied into each); a file
music21 reads as several works (an Opus) gives one tune per work. A tune's id is its path
(relative to the folder or to music21's corpus) plus ``#<index in the file>``.

Parsing runs in a process pool with a progress bar; each work item is guarded, so a file or
tune that fails is counted in ``Corpus.failures`` as (id, reason) and never aborts the run.
Tunes without a usable meter (ABC ``M: none``, free meter) and tunes whose odd bars fit no
supported meter fail this way: their barlines would teach the model wrong positions.

The result is cached under ``$TUNESMITH_CACHE`` (default ``~/.cache/tunesmith``) in a pickle
named by the sha256 of (spec, file list with sizes and mtimes, tokenizer config,
``tokens.CODE_VERSION``); a second load reads it in about a second
(``corpus.provenance["cache"] == "hit"``). ``cached_corpus(spec)`` reads the cache only: None
when the corpus has not been parsed yet.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from model import MIDI_EXTENSIONS
from model.representation.files import atomic_output
from model.representation.tokens import CODE_VERSION, MelodyTokenizer, TokenizerConfig
from model.representation.parsing import encode_midi, encode_stream

EXTENSIONS = (*MIDI_EXTENSIONS, ".abc", ".xml", ".mxl", ".musicxml", ".krn")


@dataclass
class Tune:
    id: str                 # source path + "#<index in file>", stable across runs
    tokens: np.ndarray      # int32 token ids, BOS ... EOS
    meter: str              # the opening meter


@dataclass
class Corpus:
    tunes: list[Tune]
    failures: list[tuple[str, str]]             # (id, reason)
    provenance: dict = field(default_factory=dict)
    tokenizer_config: TokenizerConfig = field(default_factory=TokenizerConfig)


def cache_dir_default() -> Path:
    return Path(os.environ.get("TUNESMITH_CACHE") or Path.home() / ".cache" / "tunesmith")


# --- sources: (spec) -> files -> work items ------------------------------------------------------

def source_files(spec: str) -> tuple[Path, list[Path]]:
    """(root, files) of a corpus spec; ids are paths relative to root."""
    if spec.startswith("music21:"):
        from music21 import corpus as m21corpus
        name = spec.split(":", 1)[1]
        one = _corpus_root() / name
        if "/" in name and one.is_file() and one.suffix.lower() in EXTENSIONS:  # one file, e.g. essenFolksong/kinder0.abc
            return _corpus_root(), [one]
        files = sorted(Path(p) for p in m21corpus.getComposer(name)
                       if Path(p).suffix.lower() in EXTENSIONS)
        if not files:
            raise ValueError(f"data: music21 has no collection {name!r} "
                             "(e.g. essenFolksong, bach, ryansMammoth, oneills1850)")
        return _corpus_root(), files
    root = Path(spec).expanduser()
    if root.is_file() and root.suffix.lower() in EXTENSIONS:  # a single file (an ABC file holds many tunes)
        return root.parent, [root]
    if not root.is_dir():
        raise ValueError(f"data must be music21:<collection>, an existing folder or a "
                         f"{'/'.join(EXTENSIONS)} file, got {spec!r}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise ValueError(f"data folder {spec!r} holds no {'/'.join(EXTENSIONS)} files")
    return root, files


def _corpus_root() -> Path:
    import music21
    return Path(music21.__file__).parent / "corpus"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:                      # a music21 corpus file outside the core corpus
        return path.as_posix()


def split_abc(text: str) -> list[str]:
    """An ABC file's tunes, each starting with its X: line; file header fields go into each."""
    parts = re.split(r"(?m)^(?=X:)", text)
    header = [ln for ln in parts[0].splitlines() if re.match(r"^[A-Za-z]:", ln)] if parts else []
    tunes = []
    for part in parts[1:]:
        first, _, rest = part.partition("\n")
        tunes.append("\n".join([first, *header, rest]) if header else part)
    return tunes


def work_items(root: Path, files: list[Path]) -> list[tuple[str, str, str]]:
    """(id, kind, payload): an ABC tune's text, or a file path for everything else."""
    items = []
    for path in files:
        rel = _relative(path, root)
        if path.suffix.lower() == ".abc":
            text = path.read_bytes().decode("utf-8", errors="replace")
            items += [(f"{rel}#{i}", "abc", tune) for i, tune in enumerate(split_abc(text))]
        else:
            items.append((rel, "midi" if path.suffix.lower() in MIDI_EXTENSIONS else "music21", str(path)))
    return items


# --- parsing one item (runs in the pool) ---------------------------------------------------------

_TOKENIZER: MelodyTokenizer | None = None


def _init_worker(config_dict: dict) -> None:
    global _TOKENIZER
    _TOKENIZER = MelodyTokenizer(TokenizerConfig(**config_dict))


def parse_item(item: tuple[str, str, str]) -> list[tuple]:
    """One work item -> [("ok", id, tokens, meter)] or [("fail", id, reason)]; never raises."""
    item_id, kind, payload = item       # a failure of a whole file is reported under its path
    tok = _TOKENIZER
    try:
        if kind == "midi":
            return [_ok(f"{item_id}#0", encode_midi(tok, payload), tok)]
        from music21 import converter, stream
        parsed = (converter.parseData(payload, format="abc") if kind == "abc"
                  else converter.parse(payload))
        if isinstance(parsed, stream.Opus):
            out = []
            for i, score in enumerate(parsed.scores):
                out.append(_guarded(f"{item_id}#{i}", lambda s=score: encode_stream(tok, s), tok))
            return out or [("fail", item_id, "ValueError: no works in the file")]
        return [_guarded(item_id if kind == "abc" else f"{item_id}#0", lambda: encode_stream(tok, parsed), tok)]
    except Exception as e:                   # noqa: BLE001 - any parser failure is a counted failure
        return [("fail", item_id, _reason(e))]


def _guarded(item_id, encode, tok):
    try:
        return _ok(item_id, encode(), tok)
    except Exception as e:                   # noqa: BLE001
        return ("fail", item_id, _reason(e))


def _ok(item_id, ids, tok):
    if not any(tok.pitch_of(t) is not None for t in ids):
        return ("fail", item_id, "ValueError: the tune holds no notes")
    return ("ok", item_id, np.asarray(ids, dtype=np.int32), tok.meter_of(ids[1]))


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:200]}"


# --- loading with a cache ------------------------------------------------------------------------

def cache_key(spec: str, root: Path, files: list[Path], config: TokenizerConfig) -> str:
    listing = [(_relative(p, root), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps({"spec": spec, "files": listing, "tokenizer": asdict(config),
                       "code_version": CODE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_path(key: str, cache_dir) -> Path:
    return Path(cache_dir or cache_dir_default()) / f"corpus-{key[:24]}.pkl"


def _read_cache(path: Path, config: TokenizerConfig) -> Corpus | None:
    """The cached corpus at ``path``, or None when there is none (or it is unreadable: it is rebuilt)."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            saved = pickle.load(f)
        corpus = _from_saved(saved, config)
    except Exception:                        # noqa: BLE001 - a broken cache file is rebuilt
        return None
    corpus.provenance.update(cache="hit", cache_path=str(path))
    return corpus


def cached_corpus(spec: str, tokenizer_config: TokenizerConfig | None = None, *, cache_dir=None) -> Corpus | None:
    """The corpus of ``spec`` if it is in the cache, else None; never parses (that takes minutes)."""
    parts = spec_parts(spec)
    if len(parts) > 1:
        loaded = [cached_corpus(part, tokenizer_config, cache_dir=cache_dir) for part in parts]
        return None if any(c is None for c in loaded) else _joined(spec, loaded)
    config = tokenizer_config or TokenizerConfig()
    root, files = source_files(spec)
    return _read_cache(_cache_path(cache_key(spec, root, files, config), cache_dir), config)


STYLES_SPEC = "music21:styles"  # the collections the style input knows (model.representation.styles), together


def spec_parts(spec: str) -> list[str]:
    """The corpora a spec names: ``music21:styles`` is every collection with a style; several specs
    joined by ``+`` are each of them (a path that exists is one spec, whatever its name)."""
    if spec == STYLES_SPEC:
        from model.representation.styles import STYLE_CORPORA
        return list(STYLE_CORPORA)
    if "+" in spec and not Path(spec).expanduser().exists():
        return [part for part in spec.split("+") if part]
    return [spec]


def load_corpus(spec: str, tokenizer_config: TokenizerConfig | None = None, *, cache_dir=None,
                workers: int | None = None, progress: bool = True) -> Corpus:
    """Parse (or load from the cache) every tune of ``spec``; see the module docstring. A spec of
    several corpora (``spec_parts``) is their tunes together, each corpus cached on its own."""
    parts = spec_parts(spec)
    if len(parts) > 1:
        return _joined(spec, [load_corpus(part, tokenizer_config, cache_dir=cache_dir, workers=workers,
                                          progress=progress) for part in parts])
    config = tokenizer_config or TokenizerConfig()
    root, files = source_files(spec)
    key = cache_key(spec, root, files, config)
    path = _cache_path(key, cache_dir)
    corpus = _read_cache(path, config)
    if corpus is not None:
        return corpus
    start = time.time()
    items = work_items(root, files)
    results = _parse_all(items, config, workers, progress)
    tunes = [Tune(r[1], r[2], r[3]) for r in results if r[0] == "ok"]
    failures = [(r[1], r[2]) for r in results if r[0] == "fail"]
    provenance = {"spec": spec, "cache_key": key, "files": len(files), "items": len(items),
                  "tunes": len(tunes), "failures": len(failures), "tokenizer": asdict(config),
                  "code_version": CODE_VERSION, "parse_seconds": round(time.time() - start, 1),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    saved = {"tunes": [(t.id, t.tokens, t.meter) for t in tunes], "failures": failures,
             "provenance": provenance}
    _write_atomic(path, saved)
    corpus = _from_saved(saved, config)
    corpus.provenance.update(cache="miss", cache_path=str(path))
    return corpus


def _joined(spec: str, loaded: list[Corpus]) -> Corpus:
    """The corpora of a spec's parts as one (each part's provenance kept)."""
    provenance = {"spec": spec, "parts": [c.provenance for c in loaded],
                  "tunes": sum(len(c.tunes) for c in loaded), "failures": sum(len(c.failures) for c in loaded)}
    return Corpus([t for c in loaded for t in c.tunes], [f for c in loaded for f in c.failures], provenance,
                  loaded[0].tokenizer_config)


def _from_saved(saved: dict, config: TokenizerConfig) -> Corpus:
    return Corpus([Tune(i, t, m) for i, t, m in saved["tunes"]], list(saved["failures"]),
                  dict(saved["provenance"]), config)


def _parse_all(items, config, workers, progress) -> list[tuple]:
    from tqdm import tqdm
    workers = max(1, min(workers or os.cpu_count() or 1, len(items) or 1))
    bar = tqdm(total=len(items), desc="parsing", unit="item", disable=not progress)
    out = []
    if workers == 1:
        _init_worker(asdict(config))
        for item in items:
            out += parse_item(item)
            bar.update()
    else:
        chunk = max(1, min(64, len(items) // (workers * 8)))
        # fork: the children inherit the imported modules; they never touch torch.
        with get_context("fork").Pool(workers, _init_worker, (asdict(config),)) as pool:
            for result in pool.imap(parse_item, items, chunksize=chunk):
                out += result
                bar.update()
    bar.close()
    return out


def _write_atomic(path: Path, obj) -> None:
    with atomic_output(path) as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


# --- splits, augmentation, statistics ------------------------------------------------------------

def split_of(tune_id: str, seed: int, valid: float, test: float) -> str:
    """train/valid/test from a hash of (seed, tune id): stable whatever else is in the corpus."""
    digest = hashlib.sha256(f"{seed}:{tune_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2 ** 64
    return "valid" if u < valid else "test" if u < valid + test else "train"


def split_corpus(corpus: Corpus, seed: int = 0, valid: float = 0.05, test: float = 0.05) -> dict[str, list[Tune]]:
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ValueError(f"valid and test must be fractions in [0, 1) adding up to < 1, got {valid} and {test}")
    splits = {"train": [], "valid": [], "test": []}
    for tune in corpus.tunes:
        splits[split_of(tune.id, seed, valid, test)].append(tune)
    return splits


def transpose_tokens(tokens, semitones: int, tokenizer: MelodyTokenizer) -> np.ndarray | None:
    """Shift every NOTE token by ``semitones``; None when a pitch would leave the vocabulary's range."""
    tokens = np.asarray(tokens)
    first = tokenizer.note_id(tokenizer.config.min_pitch)
    is_note = tokens >= first
    moved = np.where(is_note, tokens + semitones, tokens)
    if is_note.any() and (moved[is_note].min() < first or moved[is_note].max() >= tokenizer.vocab_size):
        return None
    return moved.astype(tokens.dtype, copy=False)


def corpus_info(spec: str, tokenizer_config: TokenizerConfig | None = None, *, seed: int = 0,
                valid: float = 0.05, test: float = 0.05, **load_args) -> dict:
    """Tunes, notes and tokens per split, failures (count and the commonest reasons), provenance."""
    corpus = load_corpus(spec, tokenizer_config, **load_args)
    tok = MelodyTokenizer(corpus.tokenizer_config)
    first_note = tok.note_id(tok.config.min_pitch)
    splits = split_corpus(corpus, seed, valid, test)
    per_split = {name: {"tunes": len(ts), "notes": int(sum(np.count_nonzero(t.tokens >= first_note) for t in ts)),
                        "tokens": int(sum(len(t.tokens) for t in ts))} for name, ts in splits.items()}
    reasons: dict[str, int] = {}
    for _, reason in corpus.failures:
        short = re.sub(r"\d+", "N", reason)[:100]
        reasons[short] = reasons.get(short, 0) + 1
    return {"spec": spec, "tunes": len(corpus.tunes), "failures": len(corpus.failures),
            "failure_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:10]),
            "splits": per_split, "split_seed": seed,
            "meters": _count(t.meter for t in corpus.tunes),
            "cache": corpus.provenance.get("cache"), "cache_key": corpus.provenance.get("cache_key"),
            "parse_seconds": corpus.provenance.get("parse_seconds")}


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
