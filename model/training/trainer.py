"""Training the melody network with backpropagation through time (BPTT).

``TrainConfig.bptt`` picks how gradients flow through time:

* ``"full"``: each batch holds whole tunes, padded to the longest; the loss ignores the padding
  and gradients flow through every tune from BOS to EOS.
* ``k`` (int): truncated BPTT over streams. Each epoch the shuffled (and transposed) training tunes
  are concatenated and cut into ``batch_size`` lanes; every optimizer step reads the next
  ``window`` tokens of each lane. The hidden state is carried from window to window (a lane reads
  one long stream of tunes) and ``repackage_state`` detaches it every k steps, so gradients flow
  back at most k steps while the state still remembers further.

Optimizer: Adam; the learning rate halves when the validation loss fails to improve for
``lr_patience`` epochs (ReduceLROnPlateau, factor 0.5; default 1), and training stops early after ``patience`` epochs
without improvement. Gradients are clipped to a total norm of ``clip`` (the norm before clipping is
reported). Transposition augmentation applies to the training split only.

Two files are written every epoch, on Ctrl-C, when ``should_stop()`` says so and when the time
budget runs out: ``out`` holds the best model so far (what ``load_checkpoint`` reads, and what
ships) and ``<out stem>.resume.ckpt`` (ignored by git, never packaged) holds the full training
state (last weights, optimizer, scheduler, RNG, carried lane state, position in the epoch) for
``resume=True``. Each epoch's order
derives from ``seed + epoch``, so a resumed run sees the same batches and ends with the same weights.

When the run ends (``short_term``, on by default; not when ``should_stop()`` ended it), the short-term
copy model (``model/network/shortterm.py``) is fitted to the best weights' predictions on the validation tunes and stored in ``out`` beside
them; generation and ``tunesmith evaluate`` then use the mixture. Early stopping and the reported
``valid_loss`` are the network's own.
"""
from __future__ import annotations

import copy
import functools
import math
import signal
import threading
import time
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from model.training.bptt import bptt_loss, clip_gradients, repackage_state
from model.network.checkpoint import read_checkpoint, save_checkpoint
from model.representation.corpora import load_corpus, split_corpus, transpose_tokens
from model.network.scoring import fit_short_term, token_arrays, tune_batch, tune_nll
from model.network.conditions import transpose_chords, tune_positions
from model.representation.tune_labels import next_step_places
from model.network.melody import (UNKNOWN_CHORD, UNKNOWN_KEY, UNKNOWN_POINTER, UNKNOWN_RELATION,
                                  MelodyNetwork)
from model.network.shortterm import last_barline
from model.representation.tokens import MelodyTokenizer, TokenizerConfig
from model.training.key_priors import key_priors
from model.training.config import TrainConfig  # the dataclass lives torch-free there (the API reads its defaults)
from model.training.plan import plan_training, start_problem
from model.training.recipe import describe

# Settings a resumed run may change; any other difference from the saved run is an error.
RESUMABLE_CHANGES = ("epochs", "max_minutes", "patience", "threads", "out", "short_term", "from_scratch")


def end_weights(tokens, bar_id: int, weight: float) -> np.ndarray:
    """(len(tokens),) float32: ``weight`` for the tokens after a tune's last barline (its last bar and
    EOS), 1 elsewhere; entry j weighs the loss of predicting token j."""
    out = np.ones(len(tokens), dtype=np.float32)
    last = last_barline(tokens, bar_id)
    if last is not None:
        out[last + 1:] = weight
    return out


BAR_STREAM = 0x626172  # mixed into the seed for the per-bar form draws


class Trainer:
    """One training run; ``train()`` is the entry point. See the module docstring."""

    def __init__(self, config: TrainConfig, corpus, show_progress: bool, recipe: dict | None = None):
        self.config, self.show_progress = config, show_progress
        self.recipe = recipe                # how the settings were chosen (model/training/plan.py)
        self.tokenizer = MelodyTokenizer(corpus.tokenizer_config)
        splits = split_corpus(corpus, seed=config.seed, valid=config.valid, test=config.test)
        for name in ("train", "valid"):
            if not splits[name]:
                raise ValueError(f"the {name} split of {config.data!r} is empty "
                                 f"({len(corpus.tunes)} tunes); use more tunes or a larger valid fraction")
        self.train_tokens = token_arrays(splits["train"])
        self.valid_tokens = token_arrays(splits["valid"])
        net_config = config.network_config(self.tokenizer)
        use_positions = net_config.conditioned  # condition ids: position in the bar, bars remaining, key, ...
        self.train_positions = tune_positions(self.tokenizer, self.train_tokens, net_config,
                                              tune_ids=[t.id for t in splits["train"]]) if use_positions else None
        self.valid_positions = tune_positions(self.tokenizer, self.valid_tokens, net_config,
                                              tune_ids=[t.id for t in splits["valid"]]) if use_positions else None
        # the bar of every token's next grid step, where bars of a tune's form are hidden one by one
        self.train_bars = [np.asarray([b for b, _ in next_step_places(t, self.tokenizer)], dtype=np.int32)
                           for t in self.train_tokens] if net_config.form_dim else None
        self.key_prior, self.style_key_priors = None, {}
        if net_config.key_dim:  # the share of training tunes in each of the 24 keys, and per style
            first = net_config.fields(np.concatenate([p[:1] for p in self.train_positions]))
            styles = [net_config.styles[s] if s < len(net_config.styles) else None
                      for s in first["style"]] if net_config.style_dim else [None] * len(first["key"])
            self.key_prior, self.style_key_priors = key_priors(first["key"], styles)
        self.provenance = dict(getattr(corpus, "provenance", {}) or {})
        self.provenance.update(spec=config.data, splits={k: len(v) for k, v in splits.items()},
                               split_seed=config.seed, train_tokens=int(sum(map(len, self.train_tokens))))
        torch.manual_seed(config.seed)
        self.model = MelodyNetwork(net_config)
        if config.init:
            self._load_init(config.init)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.5, patience=config.lr_patience)
        self.epoch, self.step = 0, 0        # completed epochs; completed steps in the current epoch
        self.history: list[dict] = []
        self.best = {"valid_loss": math.inf, "epoch": 0, "model": None}
        self.bad_epochs = 0
        self.lane_state = None              # carried recurrent state of the stream lanes
        self.sums = self._zero_sums()       # running sums of the current epoch
        self.stop_requested = False
        self.short_term = None              # the fitted short-term model and its valid figures, at the end
        self.start_valid_loss = None        # the starting model's own valid loss, when fine-tuning

    def _load_init(self, path: str) -> None:
        """Start from another checkpoint's network weights (fine-tuning). Its network must be this
        one's, or this one's without some of the inputs after the token (key, form, chord, style):
        their input weights then start at zero, so the network starts out computing exactly what the
        checkpoint's did."""
        from model.network.checkpoint import load_checkpoint
        model, tokenizer, ckpt = load_checkpoint(path)
        problem = start_problem(ckpt, self.model.config, self.tokenizer)
        if problem:
            raise ValueError(f"init {path!r} cannot start this run: {problem}")
        state, own = model.state_dict(), self.model.state_dict()
        old, new = model.config, self.model.config
        if old != new:  # grow: each input's columns of layer 0, zero where the checkpoint had none
            wide = torch.zeros_like(own["rnn.weight_ih_l0"])
            src = state["rnn.weight_ih_l0"]
            at_old, at_new = old.input_offsets(), new.input_offsets()
            for name, width in old.input_parts():  # the parts the checkpoint has keep their columns
                wide[:, at_new[name]:at_new[name] + width] = src[:, at_old[name]:at_old[name] + width]
            state = {**own, **{k: v for k, v in state.items() if k in own and v.shape == own[k].shape},
                     "rnn.weight_ih_l0": wide}
        self.model.load_state_dict(state)

    @staticmethod
    def _zero_sums():
        return {"loss": 0.0, "tokens": 0, "grad_norm": 0.0, "grad_norm_max": 0.0, "steps": 0, "seconds": 0.0}

    # ---- data order ---------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list:
        """The epoch's batches, a pure function of (seed, epoch): [(inputs, positions, targets)]."""
        cfg, pad = self.config, self.tokenizer.pad_id
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(self.train_tokens))
        shifts = rng.integers(cfg.transpose[0], cfg.transpose[1] + 1, size=len(order))
        net = self.model.config
        # tunes read with their end unknown this epoch (drawn only when the input exists: older runs replay)
        unknown = rng.random(len(order)) < cfg.remaining_dropout if net.remaining_dim else np.zeros(len(order), bool)
        # and with their key unknown (drawn only when the input exists, after the draws above: older runs replay)
        no_key = rng.random(len(order)) < cfg.key_dropout if net.key_dim else np.zeros(len(order), bool)
        # and with their form, chords, style unknown (the same rule)
        hidden = {name: rng.random(len(order)) < getattr(cfg, f"{name}_dropout") if getattr(net, f"{name}_dim")
                  else np.zeros(len(order), bool) for name in ("form", "chord", "style")}
        # a tune that keeps its form has single bars' labels hidden too (as a request's form leaves bars
        # unlabelled), from a stream of its own so the draws above replay
        bar_rng = np.random.default_rng([cfg.seed, epoch, BAR_STREAM])
        tunes, positions = [], []
        for n, (i, shift, hide_end, hide_key) in enumerate(zip(order, shifts, unknown, no_key)):
            tokens, moved = self.train_tokens[i], None
            if shift:
                moved = transpose_tokens(tokens, int(shift), self.tokenizer)
                tokens = tokens if moved is None else np.asarray(moved, dtype=np.int64)
            tunes.append(tokens)
            pos = self.train_positions[i] if self.train_positions is not None else None
            if pos is not None:
                f = net.fields(pos)
                if moved is not None and net.key_dim:  # the key moves with the notes (minor keys stay minor)
                    f["key"] = np.where(f["key"] < UNKNOWN_KEY, (f["key"] % 12 + int(shift)) % 12 + 12 * (f["key"] // 12),
                                        f["key"])
                if moved is not None and net.chord_dim:  # and so do the chords
                    f["chord"] = transpose_chords(f["chord"], int(shift), UNKNOWN_CHORD)
                if hide_end:  # replace the remaining part with "unknown"
                    f["remaining"] = net.unknown_remaining
                if hide_key:
                    f["key"] = UNKNOWN_KEY
                if hidden["form"][n]:
                    f["relation"], f["pointer"] = UNKNOWN_RELATION, UNKNOWN_POINTER
                elif net.form_dim and cfg.form_bar_dropout:
                    bars = self.train_bars[i]
                    hide = (bar_rng.random(int(bars[-1]) + 1) < cfg.form_bar_dropout)[bars]
                    f["relation"] = np.where(hide, UNKNOWN_RELATION, f["relation"])
                    f["pointer"] = np.where(hide, UNKNOWN_POINTER, f["pointer"])
                if hidden["chord"][n]:
                    f["chord"] = UNKNOWN_CHORD
                if hidden["style"][n]:
                    f["style"] = net.unknown_style
                pos = net.pack(f)
            positions.append(pos)
        use_positions = self.train_positions is not None
        weighted = cfg.end_weight != 1.0
        if cfg.bptt == "full":
            # buckets of similar length (little padding), then the batches in random order
            chunk = cfg.batch_size * 16
            batches = []
            for c in range(0, len(tunes), chunk):
                group = sorted(range(c, min(c + chunk, len(tunes))), key=lambda j: len(tunes[j]))
                batches += [group[b:b + cfg.batch_size] for b in range(0, len(group), cfg.batch_size)]
            out = []
            for b in rng.permutation(len(batches)):
                group = [tunes[j] for j in batches[b]]
                inputs, pos, targets = tune_batch(group, [positions[j] for j in batches[b]] if use_positions else None, pad)
                w = None
                if weighted:
                    w = torch.ones(targets.shape)
                    for row, t in enumerate(group):
                        w[row, :len(t) - 1] = torch.from_numpy(end_weights(t, self.tokenizer.bar_id, cfg.end_weight)[1:])
                out.append((inputs, pos, targets, w))
            return out
        stream = torch.from_numpy(np.concatenate(tunes))
        lanes = max(1, min(cfg.batch_size, len(stream) // cfg.window))  # each lane >= one window
        length = len(stream) // lanes
        ids = stream[:lanes * length].view(lanes, length)  # (lanes, L)
        pos = torch.from_numpy(np.concatenate(positions))[:lanes * length].view(lanes, length) \
            if use_positions else None
        weights = torch.from_numpy(np.concatenate([end_weights(t, self.tokenizer.bar_id, cfg.end_weight)
                                                   for t in tunes]))[:lanes * length].view(lanes, length) \
            if weighted else None
        out = []
        for s in range(0, length - 1, cfg.window):
            e = min(s + cfg.window, length - 1)
            out.append((ids[:, s:e], pos[:, s:e] if pos is not None else None, ids[:, s + 1:e + 1],
                        weights[:, s + 1:e + 1] if weights is not None else None))
        return out

    # ---- one optimizer step and one epoch ------------------------------------------------------

    def sampled_inputs(self, inputs, positions, state):
        """Parallel scheduled sampling (Duckworth et al. 2019): the network reads the window once,
        without gradients and without dropout, from the lanes' state; at each step its own draw (a
        sample of its softmax) replaces the next input with probability ``sampled_inputs`` where both
        are grid steps (NOTE, REST, HOLD), so barlines, meters and the condition ids stay the tune's.
        The targets stay the tune's: the network learns to go on well from its own notes."""
        share = self.config.sampled_inputs
        with torch.no_grad():
            self.model.eval()
            logits, _ = self.model(inputs, positions, state)  # (B, T, V)
            self.model.train()
            u = torch.rand(logits.shape).clamp_(1e-10, 1.0 - 1e-7)
            drawn = (logits - u.log_().neg_().log_()).argmax(-1)  # Gumbel-max: one sample per step
        is_step = self._is_step
        swap = (torch.rand(inputs[:, 1:].shape) < share) & is_step[inputs[:, 1:]] & is_step[drawn[:, :-1]]
        mixed = inputs.clone()
        mixed[:, 1:] = torch.where(swap, drawn[:, :-1], inputs[:, 1:])
        return mixed

    @functools.cached_property
    def _is_step(self) -> torch.Tensor:
        """(V,) bool: which token ids are grid steps (NOTE, REST, HOLD)."""
        return torch.tensor([self.tokenizer.is_step(t) for t in range(self.tokenizer.vocab_size)])

    def train_step(self, inputs, positions, targets, weights=None) -> dict:
        """One optimizer step on a batch; with ``weights`` (B, T) the loss is the weighted mean."""
        cfg, pad = self.config, self.tokenizer.pad_id
        self.model.train()
        if cfg.sampled_inputs > 0:
            start = None if cfg.bptt == "full" else self.lane_state
            inputs = self.sampled_inputs(inputs, positions, start)
        if cfg.bptt == "full":
            loss_sum, _ = bptt_loss(self.model, inputs, positions, targets, None, inputs.shape[1], pad, weights)
        else:
            state = self.lane_state if self.lane_state is not None else self.model.init_state(inputs.shape[0])
            loss_sum, state = bptt_loss(self.model, inputs, positions, targets, state, cfg.bptt, pad, weights)
        real = targets != pad
        tokens = int(real.sum())
        loss = loss_sum / (tokens if weights is None else float(weights[real].sum()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_gradients(self.model, cfg.clip)
        if math.isfinite(grad_norm):  # a NaN/inf gradient would poison the weights and Adam's moments
            self.optimizer.step()
        if cfg.bptt != "full":
            self.lane_state = repackage_state(state)  # carried into the next window
        return {"loss": loss.item(), "tokens": tokens, "grad_norm": grad_norm}

    def validate(self) -> float:
        nll, count = tune_nll(self.model, self.tokenizer, self.valid_tokens, self.valid_positions,
                              batch_size=self.config.batch_size)
        return nll / count

    # ---- checkpoints ----------------------------------------------------------------------------

    def _fields(self) -> dict:
        cfg = asdict(self.config)
        fields = {"epoch": self.epoch, "step": self.step, "history": self.history, "train_config": cfg,
                  "data": self.provenance, "metrics": self.metrics(), "recipe": self.recipe}
        if self.model.config.key_dim:  # what generation draws a key from when a request names none
            fields["key_prior"] = self.key_prior
            fields["style_key_priors"] = self.style_key_priors
        return fields

    def metrics(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {"valid_loss": None if math.isinf(self.best["valid_loss"]) else self.best["valid_loss"],
                "best_epoch": self.best["epoch"], "epochs_done": self.epoch,
                "train_loss": last.get("train_loss"), "tokens_per_s": last.get("tokens_per_s"),
                "wall_minutes": sum(h.get("wall_seconds", 0.0) for h in self.history) / 60,
                "start_valid_loss": self.start_valid_loss,  # what fine-tuning started from, on the same tunes
                "short_term": self.short_term,  # parameters and valid figures, or None
                "short_term_valid_loss": self.short_term["valid"]["mixture_nats_per_token"] if self.short_term else None}

    def save(self) -> None:
        """Write the model file (best weights so far, or the current ones before any validation)
        and the resume file (the full training state)."""
        fields = self._fields()
        best = self.best["model"]
        save_checkpoint(self.config.resume_path(), self.model, self.tokenizer, **fields,
                        last_model={k: v.detach().clone() for k, v in self.model.state_dict().items()},
                        best={"valid_loss": self.best["valid_loss"], "epoch": self.best["epoch"], "model": best},
                        bad_epochs=self.bad_epochs, optimizer=self.optimizer.state_dict(),
                        scheduler=self.scheduler.state_dict(), rng=torch.get_rng_state(),
                        lane_state=self.lane_state, sums=self.sums)
        save_checkpoint(self.config.out, self.model, self.tokenizer, state_dict=best, **fields)

    def fit_short_term(self) -> None:
        """Fit the short-term model to the best weights on the validation tunes; rewrite ``out`` with it."""
        best = copy.deepcopy(self.model)  # a fresh network would draw its initial weights from the RNG
        best.load_state_dict(self.best["model"])
        copy_model, figures = fit_short_term(best, self.tokenizer, self.valid_tokens)  # as `tunesmith short-term`
        self.short_term = {**copy_model.to_dict(), "valid": figures}
        save_checkpoint(self.config.out, self.model, self.tokenizer, state_dict=self.best["model"],
                        **self._fields(), short_term=copy_model.to_dict())
        if self.show_progress:
            tqdm.write(f"short-term model: valid {figures['network_nats_per_token']:.4f} -> "
                       f"{figures['mixture_nats_per_token']:.4f} nats/token  -> {self.config.out}")

    def restore(self, ckpt: dict) -> None:
        saved = ckpt["train_config"]
        mine = asdict(self.config)
        diffs = [f"{k}: {saved.get(k)!r} -> {mine[k]!r}" for k in mine
                 if k not in RESUMABLE_CHANGES and _comparable(saved.get(k)) != _comparable(mine[k])]
        if diffs:
            raise ValueError("resume needs the settings of the saved run; these differ: " + "; ".join(diffs))
        self.model.load_state_dict(ckpt["last_model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        self.epoch, self.step, self.history = ckpt["epoch"], ckpt["step"], list(ckpt["history"])
        self.best = dict(ckpt["best"])
        self.bad_epochs, self.sums = ckpt["bad_epochs"], dict(ckpt["sums"])
        self.start_valid_loss = ckpt["metrics"].get("start_valid_loss")
        state = ckpt["lane_state"]
        self.lane_state = tuple(state) if isinstance(state, (list, tuple)) else state

    # ---- the loop ---------------------------------------------------------------------------------

    def run(self, progress=None, should_stop=None) -> dict:
        cfg, started = self.config, time.monotonic()
        report = progress or (lambda event: None)
        steps_done_here, seconds_here = 0, 0.0
        reason = "early_stopping" if self.bad_epochs >= cfg.patience else None  # a finished run, resumed
        if cfg.init and self.epoch == self.step == 0:
            self.start_valid_loss = self.validate()  # the weights are still the starting model's
        while self.epoch < cfg.epochs and reason is None:
            self.epoch_wall_started = time.monotonic()  # wall clock: steps, data, validation and saving
            batches = self.epoch_batches(self.epoch)
            if self.step == 0:
                self.lane_state = None
            bar = tqdm(total=len(batches), initial=self.step, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       disable=not self.show_progress, unit="step", dynamic_ncols=True)
            try:
                for inputs, positions, targets, weights in batches[self.step:]:
                    t0 = time.perf_counter()
                    out = self.train_step(inputs, positions, targets, weights)
                    dt = time.perf_counter() - t0
                    self.step += 1
                    s = self.sums
                    s["loss"] += out["loss"] * out["tokens"]
                    s["tokens"] += out["tokens"]
                    s["grad_norm"] += out["grad_norm"]
                    s["grad_norm_max"] = max(s["grad_norm_max"], out["grad_norm"])
                    s["steps"] += 1
                    s["seconds"] += dt
                    steps_done_here, seconds_here = steps_done_here + 1, seconds_here + dt
                    tokens_per_s = out["tokens"] / dt if dt > 0 else 0.0
                    remaining = len(batches) - self.step + (cfg.epochs - self.epoch - 1) * len(batches)
                    eta = remaining * seconds_here / steps_done_here
                    if cfg.max_minutes is not None:
                        eta = min(eta, max(0.0, cfg.max_minutes * 60 - (time.monotonic() - started)))
                    bar.update(1)
                    bar.set_postfix(loss=f"{out['loss']:.3f}", tok_s=f"{tokens_per_s:.0f}",
                                    gnorm=f"{out['grad_norm']:.2f}", run_left=tqdm.format_interval(eta),
                                    refresh=False)  # run_left: to the last epoch (early stopping may end it sooner)
                    report(self._event("step", len(batches), train_loss=out["loss"], grad_norm=out["grad_norm"],
                                       tokens_per_s=tokens_per_s, eta_s=eta))
                    if self.step < len(batches):
                        reason = self._stop_reason(should_stop, started)
                        if reason:
                            break
            except KeyboardInterrupt:
                bar.close()
                self.save()  # the state after the last completed step
                raise
            bar.close()
            if reason:
                break
            reason = self._end_epoch(len(batches), report)
            if reason is None:
                reason = self._stop_reason(should_stop, started)
        reason = reason or "epochs"
        self.save()
        if cfg.short_term and self.best["model"] is not None and reason != "should_stop":
            self.fit_short_term()           # (not for a run told to stop: a cancelled job frees its core now)
        result = {"checkpoint": str(cfg.out), "resume_checkpoint": str(cfg.resume_path()),
                  "recipe": self.recipe, "stopped": reason, "metrics": self.metrics(), "history": self.history}
        report(self._event("done", None, stopped=reason))
        return result

    def _end_epoch(self, steps_per_epoch: int, report) -> str | None:
        s = self.sums
        valid_loss = self.validate()
        self.epoch, self.step = self.epoch + 1, 0
        self.history.append({
            "epoch": self.epoch, "train_loss": s["loss"] / max(s["tokens"], 1), "valid_loss": valid_loss,
            "lr": self.optimizer.param_groups[0]["lr"], "grad_norm_mean": s["grad_norm"] / max(s["steps"], 1),
            "grad_norm_max": s["grad_norm_max"], "tokens_per_s": s["tokens"] / max(s["seconds"], 1e-9),
            "seconds": s["seconds"],  # the sum of the optimizer steps' times
            # wall-clock time of the epoch (of its part since a resume), validation included
            "wall_seconds": time.monotonic() - getattr(self, "epoch_wall_started", time.monotonic())})
        self.sums = self._zero_sums()
        self.scheduler.step(valid_loss)
        if valid_loss < self.best["valid_loss"]:
            self.best = {"valid_loss": valid_loss, "epoch": self.epoch,
                         "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        self.save()
        h = self.history[-1]
        if self.show_progress:
            tqdm.write(f"epoch {self.epoch}: train {h['train_loss']:.4f}  valid {valid_loss:.4f} nats/token  "
                       f"lr {h['lr']:.2g}  {h['tokens_per_s']:.0f} tok/s  -> {self.config.out}")
        report(self._event("epoch", steps_per_epoch, train_loss=h["train_loss"], valid_loss=valid_loss,
                           tokens_per_s=h["tokens_per_s"], grad_norm=h["grad_norm_mean"]))
        return "early_stopping" if self.bad_epochs >= self.config.patience else None

    def _stop_reason(self, should_stop, started) -> str | None:
        if self.stop_requested:
            return "interrupted"
        if should_stop is not None and should_stop():
            return "should_stop"
        if self.config.max_minutes is not None and time.monotonic() - started > self.config.max_minutes * 60:
            return "time_budget"
        return None

    def _event(self, kind: str, steps_per_epoch, **extra) -> dict:
        event = {"event": kind, "epoch": self.epoch + (kind == "step"), "epochs": self.config.epochs,
                 "step": self.step, "steps_per_epoch": steps_per_epoch, "train_loss": None, "valid_loss": None,
                 "tokens_per_s": None, "grad_norm": None, "eta_s": None, "history": self.history,
                 "recipe": self.recipe}
        event.update(extra)
        return event


def _comparable(value):
    return list(value) if isinstance(value, tuple) else value


def train(config: TrainConfig, progress=None, should_stop=None, resume: bool = False, *,
          corpus=None, show_progress: bool = True) -> dict:
    """Train a melody network; returns {"checkpoint", "stopped", "metrics", "history", ...}.

    ``progress(event_dict)`` is called after every step and epoch and once at the end;
    ``should_stop()`` returning True ends the run cleanly after saving (resumable). ``corpus``
    (a ``model.representation.corpora.Corpus``) skips loading ``config.data``. ``resume=True`` continues from
    ``config.resume_path()`` when it exists (else starts fresh). The first Ctrl-C finishes the
    current step, saves and returns (``stopped="interrupted"``); a second one aborts at once.
    """
    if corpus is None:
        corpus = load_corpus(config.data, TokenizerConfig(steps_per_quarter=config.steps_per_quarter),
                             progress=show_progress)
    config, recipe = plan_training(config, corpus)  # the start model and the settings left unset
    if show_progress:
        tqdm.write(describe(recipe))
    torch.set_num_threads(config.threads)
    trainer = Trainer(config, corpus, show_progress, recipe)
    if resume and config.resume_path().exists():
        trainer.restore(read_checkpoint(config.resume_path()))
        if show_progress:
            tqdm.write(f"resuming from {config.resume_path()} at epoch {trainer.epoch + 1}, step {trainer.step}")
    if threading.current_thread() is not threading.main_thread():
        return trainer.run(progress, should_stop)

    def on_sigint(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True  # finish this step, save, stop
        if show_progress:
            tqdm.write("interrupt: saving a checkpoint after this step (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        return trainer.run(progress, should_stop)
    finally:
        signal.signal(signal.SIGINT, previous)
