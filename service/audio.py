"""Render a melody's MIDI to a WAV file on the server, with a small numpy synthesizer.

Why not fluidsynth: pretty_midi's `fluidsynth()` needs the pyfluidsynth package and the
Debian libfluidsynth library, neither of which a plain `pip install` brings. pretty_midi's own
`synthesize()` is a bare sine wave whose notes start and stop with clicks. This is a soft
plucked tone instead: a few harmonics, a short attack, an exponential decay and a release
ramp, which sounds clean for a monophonic melody and installs everywhere (numpy only).
"""
import io
import wave

import numpy as np
import pretty_midi

SAMPLE_RATE = 22050
HARMONICS = (1.0, 0.45, 0.22, 0.1)     # amplitude of partials 1..4
ATTACK_S, RELEASE_S, DECAY_PER_S = 0.008, 0.06, 2.5
MAX_SECONDS = 600


def render_wav(midi_bytes: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono WAV of every note in the MIDI file."""
    midi = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes))
    notes = [n for inst in midi.instruments if not inst.is_drum for n in inst.notes]
    length = min(MAX_SECONDS, max((n.end for n in notes), default=0.0) + RELEASE_S + 0.2)
    audio = np.zeros(int(length * sample_rate) + 1, dtype=np.float64)
    for note in notes:
        if note.start >= MAX_SECONDS:
            continue
        tone = _note_wave(note.pitch, note.end - note.start, note.velocity / 127, sample_rate)
        start = int(note.start * sample_rate)
        end = min(len(audio), start + len(tone))
        audio[start:end] += tone[: end - start]
    peak = np.abs(audio).max()
    if peak > 0:
        audio *= 0.8 / peak
    pcm = (audio * 32767).astype("<i2")     # (samples,) 16-bit little-endian
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def _note_wave(pitch: int, duration: float, gain: float, sample_rate: int) -> np.ndarray:
    held = max(duration, 0.02)
    t = np.arange(int((held + RELEASE_S) * sample_rate)) / sample_rate      # (samples,)
    freq = 440.0 * 2 ** ((pitch - 69) / 12)
    tone = sum(a * np.sin(2 * np.pi * freq * (k + 1) * t) for k, a in enumerate(HARMONICS)
               if freq * (k + 1) < sample_rate / 2)                          # no aliasing
    envelope = np.minimum(1.0, t / ATTACK_S) * np.exp(-DECAY_PER_S * t)     # pluck: fast attack, decay
    release = np.clip((held + RELEASE_S - t) / RELEASE_S, 0.0, 1.0)          # ramp to 0 after note-off
    return gain * tone * envelope * release
