"""Where the step loop's CPU goes per melody: the network, the rest of a step (masks, the short-term
model, the draw, a finished melody's gate and decoding), starting requests (their rows' set-up) and
writing each melody's MIDI, with ``--clients`` default 16-bar requests in flight at once.

    python bench/step_loop_parts.py [--clients 32] [--melodies 128] [--checkout DIR]

One thread drives a ``model.generation.batcher.StepLoop`` of the shipped model the way a generate
worker's batcher does, and submits a client's next request as soon as its last one is done (seeds
0, 1, ...; 8 melodies first to warm up). CPU time of this thread (``time.thread_time``): "network" is
``MelodyNetwork.step``; "step" is the rest of ``StepLoop.step``; "admit" is ``StepLoop.admit``; "midi"
is ``Melody.midi_bytes``. ``--checkout``: the code of another checkout (a paired comparison, run
in turns with this one). Prints only this run's figures.
"""
import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--melodies", type=int, default=128)
    p.add_argument("--checkout", default=str(Path(__file__).resolve().parents[1]))
    args = p.parse_args()
    sys.path.insert(0, str(Path(args.checkout).resolve()))
    import torch
    from model.generation.batcher import Request, StepLoop
    from model.generation.params import GenerationParams
    from model.generation.sampling import Generator

    torch.set_num_threads(1)
    generator = Generator()
    loop = StepLoop(generator)
    spent = {"network": 0.0, "step": 0.0, "admit": 0.0, "midi": 0.0}
    network_step = generator.model.step

    def timed_step(*a, **k):
        started = time.thread_time()
        out = network_step(*a, **k)
        spent["network"] += time.thread_time() - started
        return out

    generator.model.step = timed_step

    def run(melodies: int, first_seed: int) -> int:
        seeds, in_flight, done = iter(range(first_seed, first_seed + melodies)), [], 0

        def submit():
            request = Request(generator.plan(GenerationParams(bars=16, seed=next(seeds))))
            loop.waiting.append(request)
            in_flight.append(request)

        for _ in range(min(args.clients, melodies)):
            submit()
        with torch.inference_mode():
            while loop.busy:
                started = time.thread_time()
                loop.admit()
                spent["admit"] += time.thread_time() - started
                started = time.thread_time()
                if loop.active:
                    loop.step()
                spent["step"] += time.thread_time() - started
                for request in [r for r in in_flight if r.future.done()]:
                    in_flight.remove(request)
                    started = time.thread_time()
                    request.result().melodies[0].midi_bytes()
                    spent["midi"] += time.thread_time() - started
                    done += 1
                    if done + len(in_flight) < melodies:
                        submit()
        return done

    run(min(8, args.melodies), 10_000)
    spent.update({k: 0.0 for k in spent})
    tokens, steps, started = loop.tokens, loop.steps, time.thread_time()
    done = run(args.melodies, 0)
    total = time.thread_time() - started
    spent["step"] -= spent["network"]
    print(f"clients {args.clients}: {done} melodies, CPU {total * 1000 / done:.1f} ms per melody: "
          + ", ".join(f"{k} {v * 1000 / done:.1f}" for k, v in spent.items())
          + f"; mean rows per step {(loop.tokens - tokens) / max(1, loop.steps - steps):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
