"""The token grammar of ``model.representation.tokens``, one token at a time: what may come next, and why not.

``GrammarState`` walks ``BOS TS (BAR [TS] step*)+ EOS`` (see ``model/representation/tokens.py``); the tokenizer's
``validate`` uses it to say where a sequence breaks the grammar, and ``allowed()`` gives the mask of
legal next tokens.
"""
from __future__ import annotations

import torch


class GrammarState:
    """The grammar, one token at a time; starts right after BOS.

    ``meter`` (optional) is the only meter allowed for the opening TS; ``bars`` (optional) makes EOS
    come after exactly that many bars; ``allow_meter_changes=False`` forbids TS after a BAR.
    After a full bar only BAR or EOS may follow; PAD and BOS are never allowed.
    """

    def __init__(self, tokenizer, meter: str | None = None, *,
                 bars: int | None = None, allow_meter_changes: bool = True):
        self.tok = tokenizer            # a model.representation.tokens.MelodyTokenizer (which imports this module)
        if meter is not None:
            tokenizer.meter_id(meter)
        if bars is not None and bars < 1:
            raise ValueError(f"bars must be >= 1, got {bars}")
        self.want_meter, self.max_bars, self.allow_changes = meter, bars, allow_meter_changes
        self.meter: str | None = None
        self.phase = "meter"            # meter -> boundary -> bar_start -> in_bar -> ... -> boundary -> end
        self.bars_done = 0              # completed bars
        self.filled = 0                 # steps so far in the current bar
        self.sounding = False           # the last step token was NOTE or HOLD

    @property
    def finished(self) -> bool:
        return self.phase == "end"

    @property
    def position(self) -> int:
        """Position in the bar of the next grid step."""
        return self.filled if self.phase in ("bar_start", "in_bar") else 0

    def _key(self) -> tuple:
        if self.phase == "meter":
            return ("meter", self.want_meter)
        if self.phase == "boundary":
            bar_ok = self.max_bars is None or self.bars_done < self.max_bars
            eos_ok = self.bars_done >= 1 and (self.max_bars is None or self.bars_done == self.max_bars)
            return ("boundary", bar_ok, eos_ok)
        if self.phase == "end":
            return ("end",)
        ts_ok = self.phase == "bar_start" and self.allow_changes and self.bars_done >= 1
        return ("steps", self.sounding, self.meter if ts_ok else None)

    def allowed(self) -> torch.Tensor:
        """BoolTensor[vocab]: which ids may come next (a fresh tensor: the caller may modify it)."""
        return self._mask()[0].clone()

    def _mask(self) -> tuple[torch.Tensor, list[bool]]:
        """The cached mask for this state, as a tensor and as a Python list (for fast checks)."""
        key = self._key()
        cached = self.tok._masks.get(key)
        if cached is None:
            tok, mask = self.tok, torch.zeros(self.tok.vocab_size, dtype=torch.bool)
            if key[0] == "meter":
                if key[1] is None:
                    mask[tok._first_ts:tok._first_note] = True
                else:
                    mask[tok.meter_id(key[1])] = True
            elif key[0] == "boundary":
                mask[tok.bar_id], mask[tok.eos_id] = key[1], key[2]
            elif key[0] == "steps":
                mask[tok._first_note:] = True
                mask[tok.rest_id], mask[tok.hold_id] = True, key[1]
                if key[2] is not None:              # a meter change right after BAR
                    mask[tok._first_ts:tok._first_note] = True
                    mask[tok.meter_id(key[2])] = False
            cached = tok._masks[key] = (mask, mask.tolist())
        return cached

    def advance(self, token_id: int, index: int | None = None) -> None:
        """Take one token; raises ValueError if the grammar does not allow it here."""
        token_id = int(token_id)
        if not 0 <= token_id < self.tok.vocab_size or not self._mask()[1][token_id]:
            name = self.tok.vocab[token_id] if 0 <= token_id < self.tok.vocab_size else f"id {token_id}"
            where = f" at index {index}" if index is not None else ""
            raise ValueError(f"token {name}{where} is not allowed here ({self._describe()})")
        tok = self.tok
        if self.phase == "meter":
            self.meter, self.phase = tok.meter_of(token_id), "boundary"
        elif token_id == tok.eos_id:
            self.phase = "end"
        elif token_id == tok.bar_id:
            self.phase, self.filled = "bar_start", 0
        elif tok.meter_of(token_id) is not None:
            self.meter, self.phase = tok.meter_of(token_id), "in_bar"
        else:                                           # a step token
            self.sounding = token_id != tok.rest_id
            self.filled += 1
            self.phase = "boundary" if self.filled == tok.bar_steps(self.meter) else "in_bar"
            self.bars_done += self.phase == "boundary"

    def _describe(self) -> str:
        if self.phase == "meter":
            return "expected the opening TS token" + (f" TS_{self.want_meter}" if self.want_meter else "")
        if self.phase == "boundary":
            return f"bar {self.bars_done} is complete: expected BAR or EOS"
        if self.phase == "end":
            return "the tune has ended with EOS"
        return (f"bar {self.bars_done + 1} ({self.meter}) at step {self.filled} of {self.tok.bar_steps(self.meter)}"
                + ("" if self.sounding else "; HOLD needs a sounding note"))
