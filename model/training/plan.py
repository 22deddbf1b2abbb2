"""Before a run trains: where it starts and with which recipe.

A run starts from a model that knows music when one fits: ``init`` when the user names one (it
must fit, or the run is refused), else the shipped model (``DEFAULT_MODEL_PATH``) when its
vocabulary (the tokenizer config) and network are the ones this run asks for; ``from_scratch``, or
a shipped model that does not fit, gives a fresh network, and the plan says why. A run that starts
from a model reads what that model reads: its key, form, chord and style inputs are switched on. Then
model/training/recipe.py fills the settings the user left unset from the training split's size.

``plan_training(config, corpus) -> (config, recipe)``: the config ``Trainer`` runs (nothing unset)
and the recipe that is printed, stored in the checkpoint and in a training job's record.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from model import DEFAULT_MODEL_PATH
from model.network.checkpoint import read_checkpoint
from model.network.melody import NetworkConfig
from model.representation.corpora import split_corpus
from model.representation.tokens import MelodyTokenizer
from model.training.config import TrainConfig
from model.training.recipe import fill_recipe




# a network's optional inputs, which a run may add to its starting model, and the TrainConfig switch of each
INPUT_SWITCHES = {"key_dim": "key_inputs", "form_dim": "form_inputs", "chord_dim": "chord_inputs",
                  "style_dim": "style_inputs"}


def start_problem(ckpt: dict, network: NetworkConfig, tokenizer: MelodyTokenizer) -> str | None:
    """Why a checkpoint cannot start this run (None: it can). Its network must be this run's (the
    backend aside: both have one state_dict layout), or this run's without some of the inputs in
    ``INPUT_SWITCHES`` (their weights then start at zero: model/training/trainer.py)."""
    saved_tokens = MelodyTokenizer.from_dict(ckpt["tokenizer_config"])
    if saved_tokens.config != tokenizer.config:
        return (f"its token vocabulary does not fit this corpus's: {saved_tokens.vocab_size} tokens "
                f"({_tokenizer_text(saved_tokens)}), this run's {tokenizer.vocab_size} "
                f"({_tokenizer_text(tokenizer)})")
    saved = NetworkConfig.from_dict(ckpt["network_config"])
    grown = {dim: getattr(network, dim) for dim in INPUT_SWITCHES if getattr(saved, dim) == 0}
    if "style_dim" in grown:
        grown["styles"] = network.styles
    saved = replace(saved, backend=network.backend, **grown)
    if saved != network:
        differs = ", ".join(f"{k} {getattr(saved, k)} (here {getattr(network, k)})"
                            for k in vars(network) if getattr(saved, k) != getattr(network, k))
        return f"its network differs from this run's: {differs}"
    return None


def _tokenizer_text(tokenizer: MelodyTokenizer) -> str:
    c = tokenizer.config
    return f"{c.steps_per_quarter} steps a quarter, pitches {c.min_pitch}..{c.max_pitch}, {len(c.meters)} meters"




def with_inputs_of(config: TrainConfig, ckpt: dict) -> TrainConfig:
    """``config`` with every optional input the checkpoint's network has switched on: a run that
    fine-tunes a model keeps what it was told (the shipped model reads a key, a form, chords, a style)."""
    saved = ckpt["network_config"]
    return replace(config, **{switch: True for dim, switch in INPUT_SWITCHES.items() if saved.get(dim)})


def choose_start(config: TrainConfig, tokenizer: MelodyTokenizer) -> tuple[TrainConfig, str | None, str]:
    """(config, checkpoint to fine-tune or None, why); the config takes the starting model's inputs
    (``with_inputs_of``). Raises ValueError when a named ``init`` does not fit."""
    if config.from_scratch:
        return config, None, "from_scratch was asked for"
    if config.init:
        ckpt = read_checkpoint(config.init)
        config = with_inputs_of(config, ckpt)
        problem = start_problem(ckpt, config.network_config(tokenizer), tokenizer)
        if problem:
            raise ValueError(f"init {config.init!r} cannot start this run: {problem}; name a model trained "
                             "with the same tokenizer and network settings, or train from scratch (from_scratch)")
        return config, config.init, "init was named"
    if not Path(DEFAULT_MODEL_PATH).is_file():
        return config, None, f"the shipped model {DEFAULT_MODEL_PATH} is missing"
    ckpt = read_checkpoint(DEFAULT_MODEL_PATH)
    adopted = with_inputs_of(config, ckpt)
    problem = start_problem(ckpt, adopted.network_config(tokenizer), tokenizer)
    if problem:
        return config, None, f"the shipped model does not fit: {problem}"
    return adopted, str(DEFAULT_MODEL_PATH), "the shipped model fits this corpus's vocabulary and these network settings"


def plan_training(config: TrainConfig, corpus) -> tuple[TrainConfig, dict]:
    """The config to train (start and recipe filled in) and the recipe (model/training/recipe.py)."""
    tokenizer = MelodyTokenizer(corpus.tokenizer_config)
    train = split_corpus(corpus, seed=config.seed, valid=config.valid, test=config.test)["train"]
    config, start, reason = choose_start(config, tokenizer)
    return fill_recipe(config, len(train), int(sum(len(t.tokens) for t in train)), start, reason)
