"""model/generation/infill.py: bars regenerated in place keep every note outside the span, alone,
in a busy batcher and from the command line, with the same bytes for the same seed."""
import io

import mido
import pytest
import torch

from model.cli import main as cli_main
from model.generation.infill import INFILL_CANDIDATES, split_at_bars
from model.generation.params import GenerationParams, ParameterError
from model.generation.sampling import Generator
from model.network.checkpoint import save_checkpoint
from model.network.melody import MelodyNetwork, NetworkConfig
from model.network.shortterm import CopyModel
from model.representation.tokens import MelodyTokenizer, Note
from worker.batcher import Batcher

TOK = MelodyTokenizer()
# 6 bars of 4/4 (16 steps a bar); the note at beat 15 is tied over the barline into bar 5
PRIMER = [[60 + (i * 5) % 12, i, 1] for i in range(15)] + [[67, 15, 2]] + [[64 + i % 3, 17 + i, 1] for i in range(7)]


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=32, embedding_dim=8, num_layers=2,
                                      position_dim=4, max_positions=TOK.max_bar_steps, remaining_dim=3))
    copy = CopyModel(beta=1.0, gate=[-2.0] * 12)
    path = save_checkpoint(tmp_path_factory.mktemp("infill") / "tiny.pt", net, TOK, short_term=copy.to_dict())
    return Generator(path)


def bars_of(ids):
    """The step tokens of every bar."""
    out = []
    for t in ids:
        if t == TOK.bar_id:
            out.append([])
        elif out and TOK.is_step(t):
            out[-1].append(t)
    return out


def midi_notes(data: bytes) -> list[tuple[int, int, int]]:
    """(pitch, start tick, end tick) of every note, read back with mido (an independent reader)."""
    notes, sounding, now = [], {}, 0
    for msg in mido.merge_tracks(mido.MidiFile(file=io.BytesIO(data)).tracks):
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            sounding[msg.note] = now
        elif msg.type in ("note_off", "note_on") and msg.note in sounding:
            notes.append((msg.note, sounding.pop(msg.note), now))
    return sorted(notes, key=lambda n: (n[1], n[0]))


def outside(notes, first_tick: int, end_tick: int):
    """The notes that start and end outside [first_tick, end_tick)."""
    return [n for n in notes if n[2] <= first_tick or n[1] >= end_tick]


def test_split_at_bars_keeps_what_lies_around_the_span():
    ids = TOK.encode_notes([Note(60, 0, 16), Note(62, 16, 32), Note(64, 32, 48)], "4/4") 
    left, right = split_at_bars(TOK, ids, 2, 2)
    assert bars_of(left) == bars_of(ids)[:1] and bars_of(right) == bars_of(ids)[2:]
    assert right[0] == TOK.bar_id and right[-1] == TOK.eos_id
    _, right = split_at_bars(TOK, ids, 2, 3)
    assert right == [TOK.eos_id]  # the span reaches the end
    for first, last in ((0, 1), (2, 4), (3, 2)):
        with pytest.raises(ParameterError, match="regenerate"):
            split_at_bars(TOK, ids, first, last)


@pytest.mark.parametrize("extra", [{}, {"count": 3, "temperature": 1.2, "key": "C", "min_pitch": 55},
                                   {"beam_width": 4, "count": 2}])
def test_every_note_outside_the_span_is_kept(gen, extra):
    params = GenerationParams(primer=PRIMER, regenerate={"from_bar": 2, "to_bar": 3}, seed=11, **extra)
    result = gen.generate(params)
    original = TOK.encode_notes([Note(p, round(s * 4), round((s + d) * 4)) for p, s, d in PRIMER], "4/4")
    kept_before, kept_after = bars_of(original)[:1], bars_of(original)[3:]
    ticks = TOK.decode_midi(original).resolution  # ticks per quarter note
    assert len(result.melodies) == params.count
    for melody in result.melodies:
        assert bars_of(melody.tokens)[:1] == kept_before and bars_of(melody.tokens)[3:] == kept_after
        first, end = 4 * ticks, 12 * ticks  # bars 2..3 of 4/4
        assert outside(midi_notes(melody.midi_bytes()), first, end) == outside(
            midi_notes(TOK.decode_midi_bytes(original)), first, end)
    assert [m.tokens for m in result.melodies] == [m.tokens for m in gen.generate(params).melodies]
    if params.count > 1:
        assert len({tuple(m.tokens) for m in result.melodies}) > 1  # alternatives, not one span repeated


def test_a_note_held_into_the_kept_bars_follows_a_sounding_span(gen):
    """Bar 5 begins by holding the note tied over from bar 4: every infilled bar 4 ends on a sounding step."""
    for seed in range(6):
        result = gen.generate(GenerationParams(primer=PRIMER, regenerate={"from_bar": 3, "to_bar": 4}, seed=seed,
                                               count=2))
        for melody in result.melodies:
            bars = bars_of(melody.tokens)
            assert bars[4][0] == TOK.hold_id and bars[3][-1] != TOK.rest_id
            TOK.validate(melody.tokens)


def test_infilling_in_a_busy_batcher_gives_the_bytes_it_gives_alone(gen):
    requests = [GenerationParams(primer=PRIMER, regenerate={"from_bar": 1, "to_bar": 2}, seed=3, count=2),
                GenerationParams(bars=6, seed=4, count=3),
                GenerationParams(primer=PRIMER, regenerate={"from_bar": 5, "to_bar": 6}, seed=5, beam_width=3),
                GenerationParams(primer=PRIMER, regenerate={"from_bar": 2, "to_bar": 5}, seed=6, key="G")]
    alone = [[m.midi_bytes() for m in gen.generate(p).melodies] for p in requests]
    batcher = Batcher(gen)
    try:
        handles = [batcher.submit(p) for p in requests + requests[::-1]]
        got = [[m.midi_bytes() for m in h.result(timeout=120).melodies] for h in handles]
    finally:
        batcher.close()
    assert got == alone + alone[::-1]


def test_bad_spans_are_refused_naming_the_field(gen):
    for span in ({"from_bar": 3}, {"from_bar": 4, "to_bar": 2}, {"from_bar": 0, "to_bar": 1}, [1, 2]):
        with pytest.raises(ParameterError, match="regenerate"):
            GenerationParams(primer=PRIMER, regenerate=span).validate()
    with pytest.raises(ParameterError, match="regenerate must be given with a primer"):
        GenerationParams(regenerate={"from_bar": 1, "to_bar": 2}).validate()
    with pytest.raises(ParameterError, match="max_bars"):
        GenerationParams(primer=PRIMER, regenerate={"from_bar": 1, "to_bar": 2}, max_bars=4).validate()
    with pytest.raises(ParameterError, match="primer's 1..6"):
        gen.generate(GenerationParams(primer=PRIMER, regenerate={"from_bar": 5, "to_bar": 9}))
    assert GenerationParams(count=INFILL_CANDIDATES).validate() is None


def test_the_command_line_regenerates_bars_of_a_primer_file(gen, tmp_path):
    primer = tmp_path / "tune.mid"
    primer.write_bytes(TOK.decode_midi_bytes(TOK.encode_notes(
        [Note(p, round(s * 4), round((s + d) * 4)) for p, s, d in PRIMER], "4/4")))
    out = tmp_path / "again.mid"
    argv = ["generate", "--model", str(gen.path), "--primer", str(primer), "--regenerate", "2-3", "--seed", "7",
            "--out", str(out)]
    assert cli_main(argv) == 0
    again = mido.MidiFile(out)
    assert again.length > 0
    ticks = TOK.decode_midi(TOK.encode_notes([Note(60, 0, 4)], "4/4")).resolution
    assert outside(midi_notes(out.read_bytes()), 4 * ticks, 12 * ticks) == outside(
        midi_notes(primer.read_bytes()), 4 * ticks, 12 * ticks)
    assert cli_main(argv[:-2] + ["--regenerate", "two", "--out", str(out)]) == 2
