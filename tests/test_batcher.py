"""worker/batcher.py and model/generation/batcher.py: requests sharing one step loop give the bytes
they give alone (and from Generator.generate); deadlines and cancellation act within a step."""
import threading
from concurrent.futures import CancelledError

import pytest
import torch

from model import DEFAULT_MODEL_PATH
from model.network.checkpoint import load_checkpoint, save_checkpoint
from model.network.melody import MelodyNetwork, NetworkConfig
from model.network.stable_kernels import MIN_ROWS
from model.generation.batcher import DeadlineExceeded
from model.generation.rows import min_rows
from model.generation.params import GenerationParams
from model.generation.sampling import Generator
from model.network.shortterm import CopyModel
from model.representation.tokens import MelodyTokenizer
from worker.batcher import Batcher

TOK = MelodyTokenizer()
PRIMER = [[62, 0, 1], [64, 1, 0.5], [66, 1.5, 1.5], [67, 3, 1]]


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=32, embedding_dim=8, num_layers=2,
                                      position_dim=4, max_positions=TOK.max_bar_steps, remaining_dim=3))
    with torch.no_grad():
        net.projection.bias[TOK.eos_id] = 1.0
    copy = CopyModel(beta=1.0, gate=[-2.0] * 12)
    path = save_checkpoint(tmp_path_factory.mktemp("b") / "tiny.pt", net, TOK, short_term=copy.to_dict())
    return Generator(path)


REQUESTS = [
    GenerationParams(bars=4, seed=1),
    GenerationParams(bars=6, seed=2, count=3, temperature=1.3, top_p=0.9, meter="3/4"),
    GenerationParams(bars=3, seed=3, key="D", scale="dorian", min_pitch=55, max_pitch=80, top_k=12),
    GenerationParams(min_bars=2, max_bars=7, seed=4, count=2, cadence="tonic", key="G"),
    GenerationParams(bars=5, seed=5, primer=PRIMER, include_primer=False, short_term=False),
    GenerationParams(bars=4, seed=6, beam_width=3, count=2),
    GenerationParams(bars=8, seed=7, count=4, meter="6/8", cadence="tonic", avoid_repetition=False),
    GenerationParams(min_bars=2, max_bars=6, seed=8, count=3, tonic_pull=9.5, meter="3/4"),
    GenerationParams(bars=5, seed=10, count=2, tonic_pull=0.0, key="A", beam_width=2),
    GenerationParams(bars=8, seed=11, count=3, form="AA'BA", pickup=True, key="E", scale="minor"),
    GenerationParams(bars=6, seed=12, count=2, form="ABA", form_strict=True, pickup=False, beam_width=2),
]


def midi_of(generation):
    return [m.midi_bytes() for m in generation.melodies]


def test_requests_in_a_busy_batch_give_their_bytes_alone(gen):
    batcher = Batcher(gen)
    try:
        alone = [midi_of(batcher.submit(p).result(timeout=60)) for p in REQUESTS]  # an idle worker, one by one
        # and Generator.generate (the CLI, evaluation) runs the same step loop: the same melodies
        assert alone == [midi_of(gen.generate(p)) for p in REQUESTS]
        for mix in (REQUESTS, REQUESTS[::-1], REQUESTS[2:] + REQUESTS[:2]):
            handles = [batcher.submit(p) for p in mix]
            got = [midi_of(h.result(timeout=60)) for h in handles]
            assert got == [alone[REQUESTS.index(p)] for p in mix]
        # joining a batch already under way: submit while another request runs
        long = batcher.submit(GenerationParams(bars=32, seed=9, count=5))
        late = [batcher.submit(p) for p in REQUESTS]
        assert [midi_of(h.result(timeout=60)) for h in late] == alone
        assert midi_of(long.result(timeout=60)) == midi_of(
            batcher.submit(GenerationParams(bars=32, seed=9, count=5)).result(timeout=60))
        assert max(batcher.batch_sizes) > 8  # requests did share steps
    finally:
        batcher.close()


def test_row_logits_do_not_depend_on_the_batch_from_min_rows_on():
    model, tok, _ = load_checkpoint(DEFAULT_MODEL_PATH)
    g = torch.Generator().manual_seed(0)
    n = 40
    tokens = torch.randint(3, tok.vocab_size, (n,), generator=g)
    cond = torch.randint(0, 16, (n,), generator=g)
    state = tuple(torch.randn(model.config.num_layers, n, model.config.hidden_size, generator=g) for _ in range(2))
    full, _ = model.step(tokens, cond, state, batch_stable=True)
    assert min_rows(model) == MIN_ROWS == 2
    for B in range(MIN_ROWS, n + 1):                   # every batch size from 2 rows, each row's own logits
        part, _ = model.step(tokens[:B], cond[:B], tuple(s[:, :B].contiguous() for s in state), batch_stable=True)
        assert torch.equal(part, full[:B]), B
    for _ in range(3):                                 # and wherever a row sits in the batch
        perm = torch.randperm(n, generator=g)[:int(torch.randint(2, n + 1, (1,), generator=g))]
        shuffled, _ = model.step(tokens[perm], cond[perm], tuple(s[:, perm].contiguous() for s in state),
                                 batch_stable=True)
        assert torch.equal(shuffled, full[perm])


def test_a_cancelled_request_leaves_the_others_untouched(gen):
    batcher = Batcher(gen)
    try:
        keep = [GenerationParams(bars=16, seed=s, count=2) for s in (11, 12)]
        handles = [batcher.submit(keep[0]), batcher.submit(GenerationParams(bars=64, seed=13, count=4)),
                   batcher.submit(keep[1])]
        handles[1].cancel()
        with pytest.raises(Exception) as info:
            handles[1].result(timeout=60)
        assert "Cancelled" in type(info.value).__name__
        assert [midi_of(handles[i].result(timeout=60)) for i in (0, 2)] == [
            midi_of(batcher.submit(p).result(timeout=60)) for p in keep]
    finally:
        batcher.close()


def run_streamed(generator, params):
    """(the result, the bar events) of one request in a fresh batcher."""
    events, lock = [], threading.Lock()

    def on_bar(e):
        with lock:
            events.append(e)
    batcher = Batcher(generator)
    try:
        return batcher.submit(params, on_bar=on_bar).result(timeout=120), events
    finally:
        batcher.close()


def test_bars_are_reported_in_order_and_match_the_result(gen):
    result, events = run_streamed(gen, GenerationParams(bars=6, seed=21, count=2, redraw_degenerate=False))
    for m, melody in enumerate(result.melodies):
        bars = [e for e in events if e["melody"] == m]
        assert [e["bar"] for e in bars] == list(range(6))
        streamed = [(n["pitch"], n["start_beats"]) for e in bars for n in e["notes"]]
        assert streamed == [(n.pitch, n.start / 4) for n in melody.notes]
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)


def test_a_bad_request_fails_alone(gen):
    batcher = Batcher(gen)
    try:
        bad = batcher.submit(GenerationParams(bars=4, meter="5/7"))
        good = batcher.submit(GenerationParams(bars=4, seed=1))
        with pytest.raises(ValueError, match="meter"):
            bad.result(timeout=60)
        assert midi_of(good.result(timeout=60)) == midi_of(batcher.submit(GenerationParams(bars=4, seed=1)).result(60))
    finally:
        batcher.close()


def test_a_redrawn_melody_streams_again_from_bar_0_as_itself(tmp_path):
    """The quality gate's redraws are streamed too: as the melody they replace, from bar 0, with a
    higher draw; each melody's last streamed draw is its result, note for note."""
    from test_endings import biased_checkpoint
    lazy = Generator(biased_checkpoint(tmp_path / "lazy.pt", TOK, -3.0, {TOK.rest_id: 3.5}))
    result, events = run_streamed(lazy, GenerationParams(bars=8, seed=4, count=8, avoid_repetition=False))
    assert result.to_json()["redrawn"] >= 2  # the gate had work (tests/test_endings.py)
    for m, melody in enumerate(result.melodies):
        mine = [e for e in events if e["melody"] == m]
        draws = sorted({e["draw"] for e in mine})
        assert len(draws) == melody.info["redrawn"] + 1
        for d in draws:
            assert [e["bar"] for e in mine if e["draw"] == d] == list(range(8))  # each draw from bar 0, in order
        last = [e for e in mine if e["draw"] == draws[-1]]
        assert [(n["pitch"], n["start_beats"]) for e in last for n in e["notes"]] == \
            [(n.pitch, n.start / 4) for n in melody.notes]


def test_the_stable_kernels_are_measured_and_an_unstable_set_is_refused(monkeypatch):
    from model.network import stable_kernels
    model, _, _ = load_checkpoint(DEFAULT_MODEL_PATH)
    chosen = model.stable_kernels()
    assert chosen in stable_kernels.CANDIDATES and stable_kernels.row_stable(model, chosen)
    assert not stable_kernels.row_stable(model, "fast")  # by batch size: MKL below 8 rows, oneDNN above
    step = model._step

    def drifting(tokens, positions, state, kernels="fast"):  # a set whose rows move with the batch size
        logits, after = step(tokens, positions, state, kernels)
        return (logits + 1e-6 * tokens.shape[0], after) if kernels == "mkl" else (logits, after)
    monkeypatch.setattr(model, "_step", drifting)
    assert stable_kernels.choose(model, max_rows=12) == "onednn"


def test_a_draining_batcher_finishes_what_it_holds_and_takes_nothing_new(gen):
    """A model file replaced under running jobs (worker/model_host.py): its old batcher drains."""
    params = GenerationParams(bars=64, seed=21, count=3)
    expected = midi_of(gen.generate(params))
    batcher = Batcher(gen)
    running = batcher.submit(params)
    batcher.close(drain=True)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(GenerationParams(bars=2, seed=1))
    assert midi_of(running.result(timeout=60)) == expected   # the running request still completes
    batcher.thread.join(timeout=10)
    assert not batcher.thread.is_alive()                      # and then the step loop ends


def test_waiting_requests_join_from_their_clients_in_turn(gen):
    """One client's backlog does not starve another's single melody: with room for one request at a
    time, the other client's request runs second, not after all of the first client's."""
    batcher = Batcher(gen, max_rows=1)
    finished = []
    try:
        with batcher.wake:               # the step loop waits while all of them are queued
            handles = [(f"A{i}", batcher.submit(GenerationParams(bars=4, seed=i), client="A")) for i in range(5)]
            handles.append(("B0", batcher.submit(GenerationParams(bars=4, seed=9), client="B")))
            handles += [(f"C{i}", batcher.submit(GenerationParams(bars=4, seed=20 + i), client="C")) for i in range(2)]
            for name, handle in handles:
                handle.future.add_done_callback(lambda _, name=name: finished.append(name))
        for _, handle in handles:
            handle.result(timeout=60)
    finally:
        batcher.close()
    assert finished == ["A0", "B0", "C0", "A1", "C1", "A2", "A3", "A4"]


def test_a_request_past_its_deadline_fails_with_a_message_and_the_others_run_on(gen):
    batcher = Batcher(gen)
    try:
        keep = [GenerationParams(bars=8, seed=s) for s in (31, 32)]
        handles = [batcher.submit(keep[0]),
                   batcher.submit(GenerationParams(bars=256, seed=33, count=8), time_limit=0.05),
                   batcher.submit(keep[1])]
        with pytest.raises(DeadlineExceeded, match=r"longer than its time limit of 0.05 s"):
            handles[1].result(timeout=60)
        assert [midi_of(handles[i].result(timeout=60)) for i in (0, 2)] == [midi_of(gen.generate(p)) for p in keep]
    finally:
        batcher.close()


def test_a_cancelled_request_leaves_the_batch_within_a_step(gen):
    batcher = Batcher(gen)
    try:
        other = batcher.submit(GenerationParams(bars=64, seed=41, count=2))
        started = threading.Event()
        request = batcher.submit(GenerationParams(bars=64, seed=42, count=2), on_bar=lambda e: started.set())
        assert started.wait(60)
        left = []
        request.future.add_done_callback(lambda f: left.append(batcher.loop.steps))  # on the batcher's thread
        at_cancel = batcher.loop.steps
        request.cancel()
        with pytest.raises(CancelledError):
            request.result(timeout=60)
        assert left[0] - at_cancel <= 1                     # gone at the step after the cancel, at the latest
        assert not other.future.done() or other.future.exception() is None
        assert midi_of(other.result(timeout=60)) == midi_of(gen.generate(GenerationParams(bars=64, seed=41, count=2)))
    finally:
        batcher.close()
