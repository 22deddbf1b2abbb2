"""K-fold cross-validation (model/evaluation/folds.py): a partition by tune, and a run that scores every tune once."""
import numpy as np
import pytest

from model.representation.corpora import Corpus, Tune
from model.evaluation.folds import cross_validate, fold_assignment, fold_corpora
from model.representation.tokens import MelodyTokenizer, Note
from model.training.config import TrainConfig

TOK = MelodyTokenizer()


def corpus_of(n):
    tunes = []
    for i in range(n):
        notes = [Note(60 + (i + j) % 12, 4 * j, 4 * j + 4) for j in range(8)]
        tunes.append(Tune(f"file{i // 7}.abc#{i % 7}", np.asarray(TOK.encode_notes(notes, "4/4"), np.int32), "4/4"))
    return Corpus(tunes, [])


@pytest.mark.parametrize("n,k", [(213, 10), (25, 3), (10, 10)])
def test_folds_partition_by_tune_with_no_overlap_and_cover_every_tune_once(n, k):
    corpus = corpus_of(n)
    parts = fold_corpora(corpus, k)
    held = [t.id for _, h in parts for t in h]
    assert sorted(held) == sorted(t.id for t in corpus.tunes)  # every tune held out exactly once
    for train_corpus, h in parts:
        assert not {t.id for t in train_corpus.tunes} & {t.id for t in h}
        assert len(train_corpus.tunes) + len(h) == n
    sizes = [len(h) for _, h in parts]
    assert max(sizes) - min(sizes) <= 1
    assert fold_assignment([t.id for t in corpus.tunes], k) == fold_assignment([t.id for t in corpus.tunes][::-1], k)


def test_fold_assignment_rejects_bad_requests():
    with pytest.raises(ValueError, match="folds must be >= 2"):
        fold_assignment(["a", "b"], 1)
    with pytest.raises(ValueError, match="at most the number of tunes"):
        fold_assignment(["a", "b"], 3)


def test_cross_validate_scores_every_note_once(tmp_path):
    corpus = corpus_of(30)
    config = TrainConfig(data="x", out=str(tmp_path / "x.pt"), hidden_size=8, embedding_dim=4, layers=1,
                         epochs=1, window=16, batch_size=4, threads=1, from_scratch=True)
    report = cross_validate(corpus, 3, config, out_dir=tmp_path)
    assert report["protocol"]["name"] == "equal data" and "start_mixture" not in report
    assert report["folds"] == 3 and sum(f["tunes"] for f in report["per_fold"]) == 30
    notes = 8 * len(corpus.tunes)  # every tune has 8 notes
    assert report["network_only"]["notes"] == notes == report["mixture"]["notes"]
    assert report["network_only"]["tunes"] == 30
    assert all(np.isfinite(f["network_only"]["bits_per_note"]) for f in report["per_fold"])


def test_transfer_refuses_a_starting_model_that_saw_the_evaluated_tunes(tmp_path, monkeypatch):
    from model.representation.corpora import load_corpus
    from model.representation.tokens import Note
    from model.training.trainer import train
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tunes"
    folder.mkdir()
    for i in range(12):  # the starting model's corpus: a folder, so its checkpoint names a corpus to check
        notes = [Note(60 + (i + j) % 7, 4 * j, 4 * j + 4) for j in range(8)]
        TOK.decode_midi(TOK.encode_notes(notes, "4/4")).write(str(folder / f"t{i}.mid"))
    small = dict(hidden_size=8, embedding_dim=4, layers=1, epochs=1, window=16, batch_size=4, threads=1)
    start = TrainConfig(data=str(folder), out=str(tmp_path / "start.pt"), valid=0.3, test=0.0, from_scratch=True,
                        **small)
    train(start, show_progress=False)
    seen = load_corpus(str(folder), progress=False)
    config = TrainConfig(data="x", out=str(tmp_path / "x.pt"), init=start.out, **small)
    with pytest.raises(ValueError, match=r"never saw the evaluated tunes, but .*start.pt was trained on .*tunes, "
                                         r"which holds 12 of the 12 .*use --from-scratch"):
        cross_validate(seen, 3, config, out_dir=tmp_path)
    moved = Corpus([Tune(t.id, np.where(t.tokens >= TOK.note_id(36), t.tokens + 2, t.tokens).astype(np.int32), t.meter)
                    for t in seen.tunes], [])  # the same tunes a tone higher are the same tunes
    with pytest.raises(ValueError, match="which holds 12 of the 12"):
        cross_validate(moved, 3, config, out_dir=tmp_path)
    report = cross_validate(corpus_of(30), 3, config, valid=0.3, out_dir=tmp_path / "folds")  # tunes it never saw
    assert report["protocol"]["name"] == "transfer" and report["protocol"]["start"] == start.out
    assert report["start_network_only"]["notes"] == report["network_only"]["notes"] == 8 * 30
    assert all(f["recipe"]["start"] == start.out and f["recipe"]["lr"] == 5e-4 for f in report["per_fold"])
