"""Bach's four-part chorales as harmony data: the soprano line, the bars, and what sounds under it.

music21 ships Bach's chorales; the true harmony under each soprano note is known from the four parts,
so they train the chord estimator's transition table (``model.representation.harmony``) and test it
(``bench/harmony_bach.py``). Parsing ~400 scores and chordifying them takes minutes, so they are read
once, in one process, into a small JSON cache beside the corpora (``$TUNESMITH_CACHE``):

    python -m model.representation.chorales        # parse (or report the cache), nice it

A chorale is a dict: ``id`` (its corpus file, e.g. ``bach/bwv269``), ``meter`` (the first time
signature), ``bars`` ([offset, quarters] of each bar, the pickup shorter), ``soprano`` ([midi, offset,
quarters] of each note, ties merged) and ``verticals`` ([offset, quarters, [pitch name, ...]] of each
chord of ``chordify``, spelled as Bach spelled them, so that music21 finds their roots). Times are in quarter notes. Only scores of exactly four parts are kept.
The split is by chorale id (``split_of``, the corpora's rule), so train, valid and test never share one.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from model.representation.corpora import cache_dir_default, split_of
from model.representation.files import atomic_write

CACHE_NAME = "bach-chorales-v2.json"


def chorale_paths() -> list[Path]:
    from music21 import corpus
    return sorted(p for p in corpus.getComposer("bach") if p.suffix in (".mxl", ".xml"))


def read_chorale(path: Path) -> dict | None:
    """One chorale as the module docstring's dict, or None when it is not four parts of one meter."""
    from music21 import converter, meter as m21meter
    score = converter.parse(str(path))
    parts = list(score.parts)
    if len(parts) != 4:
        return None
    soprano = parts[0]
    signatures = list(soprano.recurse().getElementsByClass(m21meter.TimeSignature))
    if not signatures:
        return None
    bars = [[float(m.offset), float(m.duration.quarterLength)] for m in soprano.getElementsByClass("Measure")]
    notes = [[int(n.pitch.midi), float(n.offset), float(n.quarterLength)]
             for n in soprano.stripTies().flatten().notes if n.isNote and n.quarterLength > 0]
    verticals = [[float(c.offset), float(c.quarterLength), [p.nameWithOctave for p in sorted(c.pitches)]]
                 for c in score.chordify().flatten().getElementsByClass("Chord") if c.quarterLength > 0]
    if not notes or not bars:
        return None
    return {"id": f"bach/{path.stem}", "meter": signatures[0].ratioString, "bars": bars,
            "soprano": notes, "verticals": verticals}


def label_vertical(pitch_names: list[str]) -> tuple[int, int | None]:
    """Bach's chord in one vertical: (root pitch class, quality index in ``chords.QUALITIES`` or None
    when music21 calls it something the vocabulary lacks: augmented, a bare fifth or octave, ...).
    Sevenths other than the dominant's count as their triad (Am7 as Am, Bm7b5 and Bdim7 as Bdim)."""
    from music21 import chord
    c = chord.Chord(pitch_names)
    if c.isDominantSeventh():
        return c.root().pitchClass, 3
    return c.root().pitchClass, {"major": 0, "minor": 1, "diminished": 2}.get(c.quality)


def cache_path(cache_dir=None) -> Path:
    return Path(cache_dir or cache_dir_default()) / CACHE_NAME


def load_chorales(cache_dir=None, *, parse: bool = True, progress: bool = False) -> list[dict]:
    """The chorales from the cache; parsed (once, in this process) and cached when absent."""
    path = cache_path(cache_dir)
    if path.is_file():
        return json.loads(path.read_text())
    if not parse:
        raise FileNotFoundError(f"{path} is absent: run python -m model.representation.chorales first")
    out, paths = [], chorale_paths()
    for i, p in enumerate(paths):
        try:
            chorale = read_chorale(p)
        except Exception as e:  # a score music21 cannot read is left out, and said so
            print(f"skipped {p.name}: {e}", file=sys.stderr)
            continue
        if chorale is not None:
            out.append(chorale)
        if progress and i % 25 == 0:
            print(f"{i}/{len(paths)} scores, {len(out)} chorales", file=sys.stderr, flush=True)
    atomic_write(path, json.dumps(out).encode())
    return out


def split_chorales(chorales: list[dict], seed: int = 0, valid: float = 0.1,
                   test: float = 0.2) -> dict[str, list[dict]]:
    """train/valid/test by chorale id (a hash, stable whatever else is cached)."""
    out = {"train": [], "valid": [], "test": []}
    for c in chorales:
        out[split_of(c["id"], seed, valid, test)].append(c)
    return out


if __name__ == "__main__":
    found = load_chorales(progress=True)
    sizes = {k: len(v) for k, v in split_chorales(found).items()}
    print(f"{len(found)} chorales in {cache_path()}: {sizes}")
