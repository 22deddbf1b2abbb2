"""The recipe that fits the data (model/training/recipe.py) and where a run starts (model/training/plan.py)."""
import numpy as np
import pytest
import torch

from model import DEFAULT_MODEL_PATH
from model.network.checkpoint import load_checkpoint, read_checkpoint
from model.network.melody import NetworkConfig
from model.representation.corpora import Corpus, Tune
from model.representation.tokens import MelodyTokenizer, Note, TokenizerConfig
from model.training.config import TrainConfig
from model.training.plan import plan_training
from model.training.recipe import RECIPE_FIELDS, describe, fill_recipe, size_recipe
from model.training.trainer import Trainer, train

TOK = MelodyTokenizer()


def corpus_of(n: int, config: TokenizerConfig = TokenizerConfig()) -> Corpus:
    tok = MelodyTokenizer(config)
    tunes = [Tune(f"t{i}", np.asarray(tok.encode_notes([Note(60 + (i + j) % 7, 2 * j, 2 * j + 2) for j in range(16)],
                                                       "4/4"), np.int32), "4/4") for i in range(n)]
    return Corpus(tunes, [], {"spec": "synthetic"}, config)


def test_the_rule_gives_small_corpora_the_kinder_recipe_and_essen_the_shipped_one():
    # kinder's folds: ~172 training tunes, ~22,000 tokens (docs/model-card.md)
    assert size_recipe(172, 22_000, fine_tune=False) == {
        "batch_size": 8, "epochs": 100, "lr": 2e-3, "lr_patience": 4, "patience": 10, "transpose": (-5, 6)}
    # all of Essen's training split: 7,392 tunes, 1,583,431 tokens; the shipped stage 1's settings
    assert size_recipe(7392, 1_583_431, fine_tune=False) == {
        "batch_size": 64, "epochs": 30, "lr": 2e-3, "lr_patience": 1, "patience": 4, "transpose": (0, 0)}
    middle = size_recipe(1800, 380_000, fine_tune=False)  # between them: more lanes, fewer epochs
    assert 8 < middle["batch_size"] <= 64 and 30 <= middle["epochs"] < 100
    # fine-tuning: the kinder transfer run's recipe, and the shipped stage 2's rate on Essen
    assert size_recipe(172, 22_000, fine_tune=True) == {
        "batch_size": 8, "epochs": 20, "lr": 5e-4, "lr_patience": 1, "patience": 4, "transpose": (0, 0)}
    assert size_recipe(7392, 1_583_431, fine_tune=True)["epochs"] <= 5
    with pytest.raises(ValueError, match="must hold tunes and tokens, got 0 tunes"):
        size_recipe(0, 0, fine_tune=False)


def test_explicit_settings_win_over_the_rule_and_the_recipe_says_which_the_rule_chose():
    config = TrainConfig(data="x", out="x.pt", batch_size=32, transpose=(0, 0), threads=1)
    filled, recipe = fill_recipe(config, 172, 22_000, None, "from_scratch was asked for")
    assert filled.batch_size == 32 and filled.transpose == (0, 0)  # the user's
    assert filled.epochs == 100 and filled.patience == 10 and filled.lr_patience == 4  # the rule's
    assert recipe["chosen_by_rule"] == ["epochs", "lr", "lr_patience", "patience"]
    assert recipe["batch_size"] == 32 and recipe["transpose"] == [0, 0] and recipe["start"] is None
    assert all(getattr(filled, name) is not None for name in RECIPE_FIELDS) and filled.threads == 1
    assert "from scratch" in describe(recipe) and "batch 32" in describe(recipe)
    unset = TrainConfig(data="x", out="x.pt")
    assert all(getattr(unset, name) is None for name in RECIPE_FIELDS)  # unset until the rule fills them
    assert fill_recipe(unset, 172, 22_000, None, "")[0].threads >= 1


def test_a_run_fine_tunes_the_shipped_model_where_it_fits_and_says_so(tmp_path):
    config, recipe = plan_training(TrainConfig(data="synthetic", out=str(tmp_path / "m.pt"), valid=0.3, test=0.0,
                                               epochs=1, short_term=False), corpus_of(12))
    assert config.init == str(DEFAULT_MODEL_PATH) and recipe["start"] == str(DEFAULT_MODEL_PATH)
    assert config.lr == 5e-4 and config.epochs == 1 and "shipped model fits" in recipe["start_reason"]
    # the run reads what the shipped model reads (its key, form, chord and style inputs), though none was asked for
    shipped_inputs = read_checkpoint(DEFAULT_MODEL_PATH)["network_config"]
    assert config.network_config(TOK) == NetworkConfig.from_dict({**shipped_inputs, "backend": config.backend})
    trainer = Trainer(config, corpus_of(12), show_progress=False, recipe=recipe)
    shipped, _, _ = load_checkpoint(DEFAULT_MODEL_PATH)
    for name, value in shipped.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    before = trainer.validate()  # the shipped model on this run's valid tunes
    result = trainer.run()  # one epoch (set), the rest of the recipe the rule's
    assert result["metrics"]["start_valid_loss"] == before  # stored beside what fine-tuning reached
    assert result["metrics"]["valid_loss"] is not None
    scratch, recipe = plan_training(TrainConfig(data="synthetic", out="m.pt", from_scratch=True), corpus_of(12))
    assert scratch.init is None and recipe["start_reason"] == "from_scratch was asked for"
    small, recipe = plan_training(TrainConfig(data="synthetic", out="m.pt", hidden_size=16), corpus_of(12))
    assert small.init is None and "hidden_size 256 (here 16)" in recipe["start_reason"]


def test_a_named_model_whose_vocabulary_does_not_fit_is_refused(tmp_path):
    first = TrainConfig(data="synthetic", out=str(tmp_path / "m.pt"), hidden_size=8, embedding_dim=4, layers=1,
                        epochs=1, window=16, batch_size=4, threads=1, valid=0.3, test=0.0, from_scratch=True)
    train(first, corpus=corpus_of(12), show_progress=False)
    other = TokenizerConfig(max_pitch=84)
    with pytest.raises(ValueError, match=r"init .* cannot start this run: its token vocabulary does not fit "
                                         r"this corpus's: 95 tokens .*pitches 36..96.*, this run's 83"):
        plan_training(TrainConfig(data="synthetic", out=str(tmp_path / "n.pt"), hidden_size=8, embedding_dim=4,
                                  layers=1, init=first.out), corpus_of(12, other))
    with pytest.raises(ValueError, match="from_scratch must be off when init names a model"):
        TrainConfig(init=first.out, from_scratch=True)


def test_the_recipe_is_stored_in_the_checkpoint_and_sent_with_progress(tmp_path):
    events = []
    config = TrainConfig(data="synthetic", out=str(tmp_path / "m.pt"), hidden_size=8, embedding_dim=4, layers=1,
                         epochs=1, window=16, threads=1, valid=0.3, test=0.0, from_scratch=True)
    result = train(config, corpus=corpus_of(12), progress=events.append, show_progress=False)
    stored = read_checkpoint(config.out)["recipe"]
    assert stored == result["recipe"] and stored["epochs"] == 1 and stored["batch_size"] == 8
    assert stored["chosen_by_rule"] == ["batch_size", "lr", "lr_patience", "patience", "transpose"]
    assert read_checkpoint(config.out)["train_config"]["batch_size"] == 8  # the config that trained, filled in
    assert all(e["recipe"] == stored for e in events) and events
    assert result["metrics"]["start_valid_loss"] is None  # from scratch: no starting model to compare with
