"""model/notation.py: the torch-free writers and the score read back from a melody's JSON."""
import pytest

from model.notation import Score, midi_bytes, musicxml_bytes
from model.sampling import GenerationParams, Generator

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
