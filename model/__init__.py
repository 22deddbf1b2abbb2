"""Tunesmith's melody model: tokens, corpora, the network, training, sampling and evaluation.

Importing the package itself is light (no torch): the service and the command line find the
shipped model through ``DEFAULT_MODEL_PATH`` without loading the network code, and the upload
checks (worker/uploads.py) accept the same MIDI files as corpus folders (model/representation/corpora.py).
"""
from pathlib import Path

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "weights" / "default.pt"  # the shipped model
MIDI_EXTENSIONS = (".mid", ".midi", ".kar")  # read as MIDI files (.kar: karaoke MIDI) wherever MIDI is accepted
