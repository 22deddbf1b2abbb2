"""Tests for model/representation/corpora.py: folder and music21 corpora, failures, cache, splits, transposition."""
import os
import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from model.representation.corpora import (Corpus, Tune, cached_corpus, corpus_info, load_corpus, parse_item, source_files, split_abc, split_corpus, transpose_tokens, work_items)
from model.representation import corpora as data
from model.representation.tokens import MelodyTokenizer, Note, TokenizerConfig

FIXTURES = Path(__file__).parent / "data"
TOK = MelodyTokenizer()


@pytest.fixture
def folder(tmp_path):
    """A small corpus: 4 ABC tunes (one in free meter), a MIDI file, a MusicXML file, a broken MIDI."""
    root = tmp_path / "songs"
    (root / "sub").mkdir(parents=True)
    shutil.copy(FIXTURES / "tunes.abc", root / "tunes.abc")
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(90, 60 + i, i * 0.5, (i + 1) * 0.5) for i in range(8)]
    pm.instruments.append(inst)
    pm.write(str(root / "sub" / "scale.mid"))
    (root / "song.musicxml").write_bytes(TOK.decode_musicxml(TOK.encode_notes([Note(67, 0, 4), Note(69, 4, 12)], "3/4")))
    (root / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01garbage")
    (root / "notes.txt").write_text("not a tune")
    return root


def test_folder_corpus_parses_counts_failures_and_caches(folder, tmp_path):
    cache = tmp_path / "cache"
    first = load_corpus(str(folder), cache_dir=cache, workers=2, progress=False)
    assert sorted(t.id for t in first.tunes) == ["song.musicxml#0", "sub/scale.mid#0",
                                                 "tunes.abc#0", "tunes.abc#1", "tunes.abc#3"]
    failures = dict(first.failures)
    assert set(failures) == {"broken.mid", "tunes.abc#2"}
    assert "not a readable MIDI file" in failures["broken.mid"]
    assert "free meter" in failures["tunes.abc#2"]
    assert first.provenance["cache"] == "miss" and first.provenance["failures"] == 2
    for t in first.tunes:
        assert t.tokens.dtype == np.int32
        TOK.validate(t.tokens)
    by_id = {t.id: t for t in first.tunes}
    assert by_id["song.musicxml#0"].meter == "3/4" and by_id["tunes.abc#0"].meter == "6/8"
    assert [n.pitch for n in TOK.decode_notes(by_id["sub/scale.mid#0"].tokens)[0]] == list(range(60, 68))

    again = load_corpus(str(folder), cache_dir=cache, workers=1, progress=False)
    assert again.provenance["cache"] == "hit"
    assert [t.id for t in again.tunes] == [t.id for t in first.tunes]
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(again.tunes, first.tunes))
    assert again.failures == first.failures

    other = load_corpus(str(folder), TokenizerConfig(steps_per_quarter=12), cache_dir=cache, workers=1, progress=False)
    assert other.provenance["cache"] == "miss"                   # the tokenizer config is in the key
    os.utime(folder / "tunes.abc", ns=(1, 1))
    assert load_corpus(str(folder), cache_dir=cache, workers=1, progress=False).provenance["cache"] == "miss"
    assert len(list(cache.glob("*.tmp"))) == 0                   # atomic writes leave no debris


def test_cached_corpus_reads_only_what_load_corpus_cached(folder, tmp_path):
    cache = tmp_path / "cache"
    assert cached_corpus(str(folder), cache_dir=cache) is None                # never parses
    assert not cache.exists()
    loaded = load_corpus(str(folder), cache_dir=cache, workers=1, progress=False)
    cached = cached_corpus(str(folder), cache_dir=cache)
    assert cached.provenance["cache"] == "hit" and cached.provenance["cache_path"] == loaded.provenance["cache_path"]
    assert [t.id for t in cached.tunes] == [t.id for t in loaded.tunes]
    assert cached_corpus(str(folder), TokenizerConfig(steps_per_quarter=12), cache_dir=cache) is None
    Path(loaded.provenance["cache_path"]).write_bytes(b"not a pickle")       # a broken file counts as absent
    assert cached_corpus(str(folder), cache_dir=cache) is None


def test_bad_specs_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="existing folder"):
        load_corpus(str(tmp_path / "nope"), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="holds no"):
        load_corpus(str(tmp_path), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no collection"):
        load_corpus("music21:no-such-collection", cache_dir=tmp_path)


def test_music21_collections_items_parse():
    root, files = source_files("music21:essenFolksong")
    assert len(files) == 31
    items = work_items(root, files[:1])
    assert items[0][0] == "essenFolksong/altdeu10.abc#0" and items[0][2].startswith("X:1")
    data._init_worker({"steps_per_quarter": 4})
    (status, tune_id, tokens, meter), = parse_item(items[0])
    assert (status, tune_id, meter) == ("ok", "essenFolksong/altdeu10.abc#0", "4/2")
    TOK.validate(tokens)
    root, files = source_files("music21:bach")
    (status, tune_id, tokens, meter), = parse_item(work_items(root, [root / "bach" / "bwv66.6.mxl"])[0])
    notes, _ = TOK.decode_notes(tokens)
    assert status == "ok" and meter == "4/4" and min(n.pitch for n in notes) >= 60   # the soprano line


def test_split_abc_copies_header_fields():
    tunes = split_abc("% comment\nL:1/8\n\nX:1\nM:2/4\nK:C\nCD|\n\nX:2\nM:3/4\nK:G\nGAB|\n")
    assert len(tunes) == 2 and tunes[1].startswith("X:2\nL:1/8\nM:3/4")


def fake_corpus(n):
    tunes = [Tune(f"f{i // 10}.abc#{i % 10}", np.array([1, 2], np.int32), "4/4") for i in range(n)]
    return Corpus(tunes, [], {}, TokenizerConfig())


def test_split_is_deterministic_disjoint_and_stable():
    corpus = fake_corpus(2000)
    a, b = split_corpus(corpus, seed=3), split_corpus(corpus, seed=3)
    ids = {k: {t.id for t in v} for k, v in a.items()}
    assert ids == {k: {t.id for t in v} for k, v in b.items()}
    assert not ids["train"] & ids["valid"] and not ids["train"] & ids["test"] and not ids["valid"] & ids["test"]
    assert sum(map(len, ids.values())) == 2000
    assert 40 < len(ids["valid"]) < 160 and 40 < len(ids["test"]) < 160
    assert ids != {k: {t.id for t in v} for k, v in split_corpus(corpus, seed=4).items()}
    smaller = split_corpus(fake_corpus(1000), seed=3)                # a tune's split ignores the others
    assert {t.id for t in smaller["valid"]} == {i for i in ids["valid"] if int(i[1:].split(".")[0]) < 100}
    with pytest.raises(ValueError, match="valid and test"):
        split_corpus(corpus, valid=0.6, test=0.5)


def test_transpose_tokens():
    ids = np.array(TOK.encode_notes([Note(60, 0, 4), Note(64, 4, 8)], "2/4"), np.int32)
    up = transpose_tokens(ids, 5, TOK)
    assert [n.pitch for n in TOK.decode_notes(up)[0]] == [65, 69] and up.dtype == np.int32
    assert np.array_equal(up[up < TOK.note_id(36)], ids[ids < TOK.note_id(36)])
    assert transpose_tokens(ids, 96 - 64 + 1, TOK) is None and transpose_tokens(ids, -(60 - 36) - 1, TOK) is None
    assert transpose_tokens(ids, 96 - 64, TOK) is not None
    high = np.array(TOK.encode_notes([Note(95, 0, 2)]), np.int32)     # +2 would leave the range: no tune
    assert [s for s in (-2, 0, 2) if transpose_tokens(high, s, TOK) is not None] == [-2, 0]


def test_corpus_info_counts(folder, tmp_path):
    corpus = load_corpus(str(folder), cache_dir=tmp_path / "cache", workers=1, progress=False)
    info = corpus_info(str(folder), cache_dir=tmp_path / "cache", progress=False, valid=0.3, test=0.3)
    assert info["tunes"] == 5 and info["failures"] == 2 and info["cache"] == "hit"
    assert sum(s["tunes"] for s in info["splits"].values()) == 5
    assert sum(s["tokens"] for s in info["splits"].values()) == sum(len(t.tokens) for t in corpus.tunes)
    notes = sum(len(TOK.decode_notes(t.tokens)[0]) for t in corpus.tunes)
    assert sum(s["notes"] for s in info["splits"].values()) == notes
