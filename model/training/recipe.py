"""The recipe that fits the data: batch size, epochs, learning rate and its schedule, patience and
transposition chosen from the size of the training split, for the settings a user left unset.

Why a rule: a fixed recipe that suits 7,400 tunes gives a 200-tune corpus about 90 optimizer steps
a fold (batch 64 lanes of 128 tokens, 30 epochs), and the model stops still learning (2.31 pitch
bits per note on kinder, against 1.83 with batch 8 for 100 epochs). The rule asks for enough steps,
whatever the size:

* **batch** (lanes): the power of two in [8, 64] that gives at least ``STEPS_PER_EPOCH`` optimizer
  steps of ``window`` tokens an epoch (kinder's folds: 8; all of Essen: 64);
* **epochs**: enough for ``STEP_BUDGET`` steps, within [30, 100] from scratch (kinder: 100; Essen: 30,
  where early stopping ends the shipped recipe at 18), and for ``FINE_TUNE_STEPS`` within [3, 20]
  when fine-tuning;
* **small corpora** (under ``SMALL_TOKENS`` training tokens) from scratch get a patient schedule
  (halve the rate after 4 epochs without a better valid loss, stop after 10) and transposition
  -5..+6: on 19 validation tunes the loss wobbles, and a rate halved at every wobble stops learning;
  larger corpora keep the shipped recipe (1 and 4 epochs, no transposition, which slowed Essen);
* **fine-tuning** starts from a model that knows music: a quarter of the rate (5e-4), the shipped
  schedule, no transposition (the recipe of the kinder transfer run and of the shipped stage 2).

docs/model-card.md ("A recipe that fits the data") has the anchors and the measurements behind each
number. Nothing here imports torch: the API shows the recipe before a job starts.
"""
from __future__ import annotations

import math
import os
from dataclasses import replace

RECIPE_FIELDS = ("batch_size", "epochs", "lr", "lr_patience", "patience", "transpose")
STEPS_PER_EPOCH = 32        # optimizer steps an epoch the batch size aims at
STEP_BUDGET = 3000          # optimizer steps a run from scratch aims at (kinder's folds: 100 epochs of ~22)
FINE_TUNE_STEPS = 600       # ... and a fine-tuning run
SMALL_TOKENS = 250_000      # training tokens under which a corpus gets the small-data schedule
MIN_BATCH, MAX_BATCH = 8, 64
SCRATCH_LR, FINE_TUNE_LR = 2e-3, 5e-4
TOKENS_PER_TUNE = 214       # Essen's mean (1,764,416 tokens in 8,244 tunes): a size guess before parsing
MAX_RECIPE_TUNES = 1_000_000


def size_recipe(tunes: int, tokens: int, fine_tune: bool, window: int = 128) -> dict:
    """The recipe for a training split of ``tunes`` tunes and ``tokens`` tokens (see the module docstring)."""
    if tunes < 1 or tokens < 1:
        raise ValueError(f"the training split must hold tunes and tokens, got {tunes} tunes, {tokens} tokens")
    lanes = tokens / (window * STEPS_PER_EPOCH)
    batch = MAX_BATCH if lanes >= MAX_BATCH else max(MIN_BATCH, 2 ** int(math.log2(max(lanes, 1))))
    steps = max(1, math.ceil(tokens / (batch * window)))
    small = tokens < SMALL_TOKENS
    if fine_tune:
        epochs = min(20, max(3, math.ceil(FINE_TUNE_STEPS / steps)))
        return {"batch_size": batch, "epochs": epochs, "lr": FINE_TUNE_LR, "lr_patience": 1, "patience": 4,
                "transpose": (0, 0)}
    epochs = min(100, max(30, math.ceil(STEP_BUDGET / steps)))
    return {"batch_size": batch, "epochs": epochs, "lr": SCRATCH_LR, "lr_patience": 4 if small else 1,
            "patience": 10 if small else 4, "transpose": (-5, 6) if small else (0, 0)}


def free_threads() -> int:
    """Torch threads for a training run: the cores not already busy (load average), at least one."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, round(cores - busy)))


def fill_recipe(config, tunes: int, tokens: int, start: str | None, start_reason: str):
    """(config with every unset recipe field and ``threads`` filled, the recipe as a dict). ``start``:
    the checkpoint the run fine-tunes (None: from scratch), ``start_reason`` says why. The recipe says
    which values the rule chose and which the user set."""
    rule = size_recipe(tunes, tokens, fine_tune=start is not None, window=config.window)
    chosen = {name: rule[name] for name in RECIPE_FIELDS if getattr(config, name) is None}
    threads = config.threads if config.threads is not None else free_threads()
    filled = replace(config, **chosen, threads=threads, init=start)
    recipe = {name: _plain(getattr(filled, name)) for name in RECIPE_FIELDS}
    recipe.update(chosen_by_rule=sorted(chosen), threads=threads, tunes=tunes, tokens=tokens,
                  start=start, start_reason=start_reason,
                  steps_per_epoch=math.ceil(tokens / (filled.batch_size * config.window)))
    return filled, recipe


def describe(recipe: dict) -> str:
    """One line for the console: what will train, how, and why."""
    start = f"fine-tuning {recipe['start']}" if recipe["start"] else "from scratch"
    low, high = recipe["transpose"]
    return (f"recipe for {recipe['tunes']} training tunes ({recipe['tokens']} tokens): {start} "
            f"({recipe['start_reason']}); batch {recipe['batch_size']}, up to {recipe['epochs']} epochs of "
            f"{recipe['steps_per_epoch']} steps, lr {recipe['lr']:g} halved after {recipe['lr_patience']} "
            f"epoch(s) without a better valid loss, stop after {recipe['patience']}, transposition "
            f"{'off' if low == high == 0 else f'{low:+d}..{high:+d}'}, {recipe['threads']} thread(s); "
            f"chosen by the rule: {', '.join(recipe['chosen_by_rule']) or 'none (all set)'}")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
