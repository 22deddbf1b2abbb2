"""A test run leaves no traces: a run of the CLI's training test, which parses a corpus and would
cache it under ~/.cache/tunesmith by default, in a fresh HOME and TMPDIR with no TUNESMITH_CACHE
set, writes nothing to HOME's cache and removes its scratch folder. (The checkout itself is checked
after every run, by tests/conftest.py.)"""
import os
import subprocess
import sys

import pytest

from traces import ROOT

pytestmark = pytest.mark.slow


def test_a_test_run_caches_corpora_only_in_its_scratch_folder(tmp_path):
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_CACHE"}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    test = "tests/test_cli.py::test_train_resume_evaluate_and_corpus_info_on_a_midi_folder"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout
    assert not (home / ".cache" / "tunesmith").exists()
    assert not [p for p in home.rglob("*") if "tunesmith" in p.name.lower()]
    assert not list(tmp.glob("tunesmith-tests-*"))          # the scratch folder went with the run
