"""Evaluation figures: consistent units for the network and the n-gram, sample statistics, the full report."""
import math

import numpy as np
import pytest
import torch

from model.network.checkpoint import save_checkpoint
from model.representation.corpora import Corpus, Tune
from model.evaluation.report import evaluate_model, evaluate_ngram, evaluate_report, fit_ngram, sample_statistics
from model.evaluation.metrics import count_notes, note_ids
from model.network.melody import MelodyNetwork, NetworkConfig
from model.generation.sampling import Generator
from model.representation.tokens import MelodyTokenizer, Note, TokenizerConfig

TOK = MelodyTokenizer()


def tune(i: int) -> np.ndarray:
    """Folk-like 4-bar tunes in C major with a little variation per tune."""
    rng = np.random.default_rng(i)
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    notes, t, k = [], 0, int(rng.integers(0, 5))
    while t < 64:
        length = int(rng.choice([2, 4, 4, 8]))
        k = int(np.clip(k + rng.integers(-2, 3), 0, 7))
        notes.append(Note(scale[k], t, min(t + length, 64)))
        t += length
    return np.asarray(TOK.encode_notes(notes, "4/4"), dtype=np.int64)


def tiny_network():
    torch.manual_seed(0)
    return MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=16, embedding_dim=8, num_layers=1,
                                       dropout=0.0))


def test_network_figures_are_consistent_and_uniform_pitch_bits_at_init():
    tunes = [tune(i) for i in range(6)]
    out = evaluate_model(tiny_network(), TOK, tunes)
    notes = sum(count_notes(t, TOK) for t in tunes)
    assert out["notes"] == notes and out["tokens"] == sum(len(t) - 1 for t in tunes)
    # bits per note = total nats / ln 2 / notes, by definition
    assert out["bits_per_note"] == pytest.approx(out["nats_per_token"] * out["tokens"] / math.log(2) / notes)
    # an untrained network is close to uniform over the pitches
    assert out["pitch_bits_per_note"] == pytest.approx(math.log2(len(note_ids(TOK))), abs=0.3)


def test_ngram_figures_use_the_same_units_and_beat_chance():
    train, valid = [tune(i) for i in range(40)], [tune(i) for i in range(40, 50)]
    test = [tune(i) for i in range(50, 56)]
    kn, table = fit_ngram(train, valid, TOK, orders=[2, 3, 4])
    assert set(table) == {2, 3, 4}
    out = evaluate_ngram(kn, TOK, test)
    assert out["order"] == kn.order and out["notes"] == sum(count_notes(t, TOK) for t in test)
    assert out["bits_per_note"] == pytest.approx(out["nats_per_token"] * out["tokens"] / math.log(2) / out["notes"])
    assert out["pitch_bits_per_note"] < 4.0               # 8 scale pitches, stepwise: far below chance, log2(61)


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "m.pt", tiny_network(), TOK, train_config={"data": "synthetic", "seed": 0})


def test_sample_statistics_compare_generated_with_reference(checkpoint):
    reference = [tune(i) for i in range(8)]
    out = sample_statistics(Generator(checkpoint), TOK, reference, count=4, seed=3)
    assert out["melodies"] == 4 and out["reference_melodies"] == 8
    for key in ("pitch_class_overlap", "interval_overlap", "length_overlap"):
        assert 0.0 <= out[key] <= 1.0
    assert out["reference_in_scale_ratio"] > 0.95          # C major tunes (a key estimate may say G or F)
    assert out["reference_degenerate_share"] == 0.0
    assert out["form"]["tunes"] == 4 and out["reference_form"]["tunes"] == 8
    assert out["form"]["empty_first_bars"] == 0 and 0 <= out["form"]["exact_repeat_share"] <= 1
    again = sample_statistics(Generator(checkpoint), TOK, reference, count=4, seed=3)
    assert again == out                                    # seeded: the same melodies, the same figures
    in_d = sample_statistics(Generator(checkpoint), TOK, reference, count=3, seed=3, key="D", scale="dorian")
    assert in_d["in_scale_ratio"] == 1.0                   # measured against the requested scale, which masks


def test_evaluate_report_holds_every_figure(checkpoint):
    corpus = Corpus([Tune(f"t{i}", tune(i).astype(np.int32), "4/4") for i in range(60)], [], {"spec": "synthetic"},
                    TokenizerConfig())
    out = evaluate_report(checkpoint, split="test", samples=2, corpus=corpus)
    for key in ("nats_per_token", "bits_per_note", "pitch_bits_per_note"):
        assert out[key] > 0 and out["ngram"][key] > 0
    assert out["ngram"]["order"] in range(3, 25)
    assert out["samples"]["melodies"] == 2
    for side in ("endings", "reference_endings"):  # how generated and reference tunes end, side by side
        assert set(out["samples"][side]) >= {"tonic_share", "final_length_beats", "final_on_strong_beat_share",
                                              "final_longer_than_beat_share"}
    assert out["samples"]["endings"]["tunes"] == 2
    assert 0 <= out["samples"]["redrawn_share"] <= 1
    with pytest.raises(ValueError, match="split"):
        evaluate_report(checkpoint, split="dev", corpus=corpus)


def test_add_short_term_stores_a_fit_that_evaluate_report_then_uses(checkpoint):
    from model.network.checkpoint import read_checkpoint
    from model.evaluation.report import add_short_term
    corpus = Corpus([Tune(f"t{i}", tune(i).astype(np.int32), "4/4") for i in range(60)], [], {"spec": "synthetic"},
                    TokenizerConfig())
    before = evaluate_report(checkpoint, split="test", samples=0, ngram_model=None, corpus=corpus)
    assert "network_only" not in before
    fitted = add_short_term(checkpoint, corpus=corpus)
    assert read_checkpoint(checkpoint)["short_term"] == fitted["short_term"]
    after = evaluate_report(checkpoint, split="test", samples=2, ngram_model=None, corpus=corpus)
    assert after["short_term"] == fitted["short_term"]
    assert after["network_only"]["bits_per_note"] == pytest.approx(before["bits_per_note"])
    assert after["bits_per_note"] != pytest.approx(before["bits_per_note"])  # the mixture is what is scored
    assert after["samples"]["melodies"] == 2
    alone = evaluate_report(checkpoint, split="test", samples=2, ngram_model=None, corpus=corpus, short_term=False)
    assert "network_only" not in alone and alone["bits_per_note"] == pytest.approx(before["bits_per_note"])
    assert alone["samples"]["params"] == {"short_term": False}
