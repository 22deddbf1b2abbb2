"""Tunesmith's melody model: tokens, corpora, the network, training, sampling and evaluation.

Importing the package itself is light (no torch): the service and the command line find the
shipped model through ``DEFAULT_MODEL_PATH`` without loading the network code.
"""
from pathlib import Path

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "weights" / "default.pt"  # the shipped model
