"""model/representation/notation.py: the torch-free writers and the score read back from a melody's JSON."""
import pytest

from model.representation.notation import Score, midi_bytes, musicxml_bytes
from model.generation.params import GenerationParams
from model.generation.sampling import Generator

PRIMER = [[62, 0, 1], [64, 1, 0.5], [66, 1.5, 1.5], [67, 3, 1]]


@pytest.fixture(scope="module")
def gen(tiny_checkpoint):
    return Generator(tiny_checkpoint)


@pytest.mark.parametrize("params", [
    GenerationParams(bars=6, seed=1, count=3),
    GenerationParams(bars=5, seed=2, meter="6/8", tempo=90),
    GenerationParams(min_bars=2, max_bars=6, seed=3, count=2),
    GenerationParams(bars=3, seed=4, primer=PRIMER, meter="3/4"),
])
def test_the_score_of_a_melodys_json_is_the_tokenizers(gen, params):
    for melody in gen.generate(params).melodies:
        score = melody.tokenizer.score(melody.tokens, melody.tempo)
        assert Score.from_melody_json(melody.to_json()) == score
        assert Score.from_dict(score.to_dict()) == score
        assert midi_bytes(score) == melody.midi_bytes()
        assert musicxml_bytes(score).lstrip().startswith(b"<?xml")


def _pretty_midi_bytes(score: Score) -> bytes:
    """What pretty_midi writes for the score (the writer midi_bytes replaced on the hot path)."""
    import io

    from model.representation.notation import midi
    buf = io.BytesIO()
    midi(score).write(buf)
    return buf.getvalue()


def test_midi_bytes_are_pretty_midis_for_any_score():
    import random
    rng = random.Random(7)
    for _ in range(300):
        spq = rng.choice([2, 3, 4, 6, 12])
        notes, step = [], rng.choice([0, 0, 3])
        for _ in range(rng.randint(0, 30)):
            step += rng.choice([0, 0, 1, 2])                          # touching notes, rests between
            length = rng.randint(1, 8)
            pitch = notes[-1][0] if notes and rng.random() < 0.2 else rng.randint(40, 90)   # a repeated pitch
            notes.append((pitch, step, step + length))
            step += length
        bars = max(1, step // (4 * spq) + rng.randint(0, 2))
        meters = [(0, rng.choice(["4/4", "3/4", "6/8", "2/2"]))]
        if bars > 2 and rng.random() < 0.3:
            meters.append((2, "3/8"))                                  # a meter change
        if rng.random() < 0.1:
            meters = [(1, "3/4")] if bars > 1 else []                  # none at bar 0
        score = Score(tuple(notes), tuple(meters), tuple(b * 4 * spq for b in range(bars + 1)), spq,
                      rng.choice([120.0, 90.0, 144.0, 61.3, 999.0]))
        assert midi_bytes(score) == _pretty_midi_bytes(score), score
