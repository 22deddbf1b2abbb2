"""Generation speed: Generator.generate end to end, for 16, 64 and 256 bars at count 1 and 32.

    python bench/bench_generate.py [--repeats 5] [--model PATH] [--threads 1] [--write]

For each length and count it times, in turns and on the same loaded model:
  generate  model.generation.sampling.Generator(...).generate(GenerationParams(bars=..., count=..., seed=...)):
            validation, the prefix, the token loop (network step + masks, repetition guard,
            Gumbel-max draw) and decoding the tokens to notes; no MIDI;
  midi      Melody.midi_bytes() for every melody of that generation (pretty_midi, written in memory);
  step()    MelodyNetwork.step alone for the same number of steps and batch (network only), so that
            generate - step() is what sampling adds.
Times are CPU seconds of this thread (time.thread_time; the machine is shared, and wall time there
counts waiting for a core), best and median of --repeats runs, beside the median wall time.
Tokens are a melody's full sequence (BOS TS (BAR step*16)*bars EOS in 4/4); per-token and per-bar
figures divide by the count, so they are the cost of one melody's token or bar.

The model: model/weights/default.pt if present, else runs/default-a.pt, else a randomly initialised
checkpoint of TrainConfig's default network (2x256 LSTM). The speed does not depend on the weights, only
on whether the checkpoint holds a short-term model (the shipped one does): each case is also generated
with short_term=False, and the difference is what the short-term model costs.
GenerationParams caps count at 16 (the service's limit); count 32 is timed through a subclass that
lifts only that cap. --write puts the table into the "Generation speed" section of docs/benchmarks.md:
every figure it writes is measured in that run (figures of earlier machines are in the History section,
which no script writes).
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks_doc import cpu_model, replace_section  # noqa: E402  (bench/benchmarks_doc.py, beside this script)
from model import DEFAULT_MODEL_PATH  # noqa: E402
from model.network.checkpoint import save_checkpoint
from model.network.melody import MelodyNetwork  # noqa: E402
from model.generation.params import MAX_COUNT  # noqa: E402
from model.generation.params import GenerationParams  # noqa: E402
from model.generation.sampling import Generator
from model.network.shortterm import CopyModel  # noqa: E402
from model.representation.tokens import MelodyTokenizer, TokenizerConfig  # noqa: E402
from model.training.config import TrainConfig  # noqa: E402

BARS, COUNTS = (16, 64, 256), (1, 32)
FALLBACK_MODEL = ROOT / "runs" / "default-a.pt"


class BenchParams(GenerationParams):
    """GenerationParams without the count cap of 16 (everything else is validated as usual)."""

    def validate(self, tokenizer=None) -> None:
        GenerationParams(**{**asdict(self), "count": 1}).validate(tokenizer)
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")


def load_generator(path: str | None) -> tuple[Generator, str]:
    """The model to time and a description of where it came from."""
    for candidate in ([Path(path)] if path else [DEFAULT_MODEL_PATH, FALLBACK_MODEL]):
        if candidate.is_file():
            return Generator(candidate), str(candidate.relative_to(ROOT) if candidate.is_relative_to(ROOT)
                                             else candidate)
    if path:
        raise SystemExit(f"--model must be an existing checkpoint, got {path}")
    torch.manual_seed(0)
    tokenizer = MelodyTokenizer(TokenizerConfig())
    net = MelodyNetwork(TrainConfig(data="none", out="none").network_config(tokenizer))
    ckpt = save_checkpoint(Path(tempfile.mkdtemp()) / "random.pt", net, tokenizer)
    return Generator(ckpt), "a randomly initialised checkpoint (TrainConfig defaults)"


def step_only(gen: Generator, batch: int, steps: int):
    """`steps` consecutive MelodyNetwork.step calls at `batch` (random tokens and positions)."""
    model, V = gen.model, gen.tokenizer.vocab_size
    ids = torch.randint(0, V, (steps, batch))
    pos = torch.randint(0, gen.tokenizer.max_bar_steps, (steps, batch)) if model.config.position_dim else None

    @torch.inference_mode()
    def run():
        state = model.init_state(batch)
        for t in range(steps):
            _, state = model.step(ids[t], pos[t] if pos is not None else None, state)

    return run


def time_case(gen: Generator, bars: int, count: int, repeats: int) -> dict:
    """CPU and wall times (seconds) of generate, MIDI writing and step() alone, per run."""
    params = [BenchParams(bars=bars, count=count, seed=seed) for seed in range(repeats + 1)]
    gen.generate(params[-1])  # warm-up: scratch buffers for this batch size, noise tables
    tokens = len(gen.generate(params[-1]).melodies[0].tokens)
    steps = step_only(gen, count, tokens - 1)
    steps()
    t = {"gen_cpu": [], "gen_wall": [], "midi_cpu": [], "midi_wall": [], "step_cpu": [], "alone_cpu": []}
    for p in params[:-1]:
        cpu = time.thread_time()
        gen.generate(BenchParams(**{**asdict(p), "short_term": False}))  # the network without its short-term model
        t["alone_cpu"].append(time.thread_time() - cpu)
        wall, cpu = time.perf_counter(), time.thread_time()
        result = gen.generate(p)
        wall2, cpu2 = time.perf_counter(), time.thread_time()
        for m in result.melodies:
            m.midi_bytes()
        t["gen_cpu"].append(cpu2 - cpu)
        t["gen_wall"].append(wall2 - wall)
        t["midi_cpu"].append(time.thread_time() - cpu2)
        t["midi_wall"].append(time.perf_counter() - wall2)
        assert len(result.melodies) == count and len(result.melodies[0].tokens) == tokens
        cpu = time.thread_time()
        steps()
        t["step_cpu"].append(time.thread_time() - cpu)
    t["tokens"] = tokens
    return t


def row(bars: int, count: int, t: dict) -> str:
    n, ms = t["tokens"], 1e3
    best, med = min(t["gen_cpu"]) / count, statistics.median(t["gen_cpu"]) / count  # seconds per melody
    wall = statistics.median(t["gen_wall"]) / count
    step = min(t["step_cpu"]) / count
    midi = min(t["midi_cpu"]) / count
    alone = min(t["alone_cpu"]) / count
    return (f"| {bars} | {count} | {n} | {best * ms:.1f} | {med * ms:.1f} | {wall * ms:.1f} | "
            f"{best / n * 1e6:.1f} | {step / n * 1e6:.1f} | {(best - step) / n * 1e6:.1f} | "
            f"{(best - alone) / n * 1e6:.1f} | {best / bars * ms:.3f} | {midi * ms:.1f} | {(best + midi) * ms:.1f} |")


HEADER = ("| bars | count | tokens per melody | generate ms per melody (CPU best) | (CPU median) | (wall median) "
          "| µs per token | of which step() µs per token | sampling µs per token | of which short-term model µs "
          "per token | ms per bar | MIDI ms per melody | generate + MIDI ms per melody |\n" + "|---" * 13 + "|")


def cell_stack_reference(repeats: int = 5, steps: int = 500) -> float:
    """µs per token of the naive baseline issue 3 compares against: an embedding, a stack of two
    torch.nn.LSTMCell(256) and the projection, one token at a time, batch 1."""
    torch.manual_seed(0)
    emb, proj = torch.nn.Embedding(95, 64), torch.nn.Linear(256, 95)
    cells = [torch.nn.LSTMCell(64, 256), torch.nn.LSTMCell(256, 256)]
    x = torch.tensor([5])

    @torch.inference_mode()
    def run():
        states = [(torch.zeros(1, 256), torch.zeros(1, 256)) for _ in cells]
        for _ in range(steps):
            h = emb(x)
            for k, cell in enumerate(cells):
                states[k] = cell(h, states[k])
                h = states[k][0]
            proj(h)

    run()
    best = math.inf
    for _ in range(repeats):
        cpu = time.thread_time()
        run()
        best = min(best, time.thread_time() - cpu)
    return best / steps * 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--model", help="checkpoint to time (default: the shipped model, else runs/default-a.pt)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--write", action="store_true",
                        help="update the Generation speed section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    torch.set_num_threads(args.threads)
    gen, source = load_generator(args.model)
    cfg = gen.model.config
    arch = f"{cfg.num_layers}x{cfg.hidden_size} {cfg.cell.upper()}, {cfg.embedding_dim}-dim embedding, " \
           f"position_dim {cfg.position_dim}, vocabulary {cfg.vocab_size}"
    print(f"model: {source} ({arch})", flush=True)
    load_before, started = os.getloadavg()[0], time.perf_counter()
    rows, results = [HEADER], {}
    for count in COUNTS:
        for bars in BARS:
            results[bars, count] = time_case(gen, bars, count, args.repeats)
            rows.append(row(bars, count, results[bars, count]))
            print(rows[-1], flush=True)
    reference = cell_stack_reference()
    print(f"nn.LSTMCell stack, batch 1: {reference:.1f} µs per token", flush=True)
    table, summary = "\n".join(rows), verdict(results) + (
        f" On the same machine and thread, the naive baseline of issue 3 (a stack of two `torch.nn.LSTMCell` "
        f"stepped one token at a time, with embedding and projection) took {reference / 1e3:.3f} ms per token.")
    elapsed, load_after = time.perf_counter() - started, os.getloadavg()[0]
    print(f"\n{table}\n\n{summary}\n\ntook {elapsed:.0f} s; 1-minute load average {load_before:.2f} before, "
          f"{load_after:.2f} after")
    if args.write:
        write_section(f"{table}\n\n{summary}", source, arch, args, load_before, load_after)


def verdict(results: dict) -> str:
    """The issue's targets at batch 1 against the best CPU times."""
    per_token = {bars: min(results[bars, 1]["gen_cpu"]) / results[bars, 1]["tokens"] * 1e3 for bars in BARS}
    per_bar = {bars: min(results[bars, 1]["gen_cpu"]) / bars * 1e3 for bars in BARS}
    sixteen = min(results[16, 1]["gen_cpu"]) * 1e3
    worst = max(per_token.values())
    spread = max(per_bar.values()) / min(per_bar.values())
    return (f"Targets at batch 1 (issue 3): at most 0.1 ms per token including sampling: "
            f"{'met' if worst <= 0.1 else 'missed'} ({worst:.3f} ms at worst); 16 bars under 30 ms: "
            f"{'met' if sixteen < 30 else 'missed'} ({sixteen:.1f} ms); cost per bar flat: "
            f"{' / '.join(f'{per_bar[b]:.2f}' for b in BARS)} ms per bar for {' / '.join(map(str, BARS))} bars "
            f"(largest / smallest {spread:.2f}).")


def write_section(table: str, source: str, arch: str, args, load_before: float, load_after: float) -> None:
    command = "python bench/bench_generate.py --write" + (f" --repeats {args.repeats}" if args.repeats != 5 else "")
    section = f"""## Generation speed

Measured {datetime.date.today().isoformat()} with `{command}`
(`torch.set_num_threads({args.threads})`, torch {torch.__version__}, {os.cpu_count()} CPU cores of an
{cpu_model()}, 1-minute load average {load_before:.2f} before the run, {load_after:.2f}
after). Model: `{source}` ({arch}); the speed does not depend on the weights, only on whether the
checkpoint holds a short-term model (`model/network/shortterm.py`; the shipped one does).

End to end through `model.generation.sampling.Generator(...).generate(GenerationParams(bars=..., count=..., seed=...))`
at the default sampling settings (temperature 1, no top-k/top-p, repetition guard on, 4/4), then
`Melody.midi_bytes()` for every melody, timed separately. "generate" covers validation, the token loop
(network step, grammar/key masks, repetition guard, Gumbel-max draw) and decoding tokens to notes; "step()"
is `MelodyNetwork.step` alone for the same number of steps and batch, timed in turns with it, and
"sampling" is the difference, which includes the short-term model: its share is "generate" minus the
same generation with `short_term=False`, timed in turns with it. CPU time of this thread (`time.thread_time`), best and median of
{args.repeats} runs, beside the median wall time (which counts waiting for a core on this shared machine).
Per-melody, per-token and per-bar figures divide by the count; tokens are the whole sequence
(`BOS TS (BAR + 16 steps) x bars EOS`). Count 32 exceeds `GenerationParams`' cap of {MAX_COUNT} and is timed
through a subclass that lifts only that cap.

{table}

What the short-term model costs per token (`model/network/shortterm.py`, `CopyState.push_and_mix`): one compiled
(numba) call that updates the match lengths over the last {CopyModel().window} tokens, counts the copy votes
and mixes them into the network's logits. The window keeps it flat once a melody is longer than
{CopyModel().window} tokens.

What sampling costs per token (see `model/generation/sampling.py`): at a grid step one mask-row lookup and add (the
row is chosen by the last step token: HOLD only after NOTE/HOLD, key/scale/range), the Gumbel noise add
and an argmax, with the bar's noise drawn in one call; structural tokens (BAR, EOS) are forced and only
stepped through; chosen tokens are written to the output once a bar; the repetition guard decides on
Python ints whether a bar needs its (B, V) penalty; the state after BOS is kept per batch size; the rest
is validating and decoding the tokens (`model/representation/tokens.py`). Earlier measurements of these parts, on other
machines, are in History.
"""
    replace_section("Generation speed", section)


if __name__ == "__main__":
    main()
