"""Shared test setup: one torch thread per process, deterministic seeds, and no traces.

A test run writes only into temporary folders: its corpus caches (TUNESMITH_CACHE, which the
service and worker processes the tests start inherit) and Hypothesis's example database go to a
scratch folder that is removed when the run ends, everything else to pytest's tmp_path. At the end,
`pytest_sessionfinish` fails the run if it left new files in the checkout (tests/traces.py).
"""
import os
import shutil
import tempfile
from pathlib import Path

SCRATCH = Path(tempfile.mkdtemp(prefix="tunesmith-tests-"))
os.environ["TUNESMITH_CACHE"] = str(SCRATCH / "corpus-cache")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

import traces  # noqa: E402

set_hypothesis_home_dir(SCRATCH / "hypothesis")
torch.set_num_threads(1)
_CHECKOUT_BEFORE = traces.untracked_files()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SCRATCH, ignore_errors=True)
    left = sorted(traces.untracked_files() - _CHECKOUT_BEFORE)
    if left:
        print(f"\nthe tests left {len(left)} new file(s) in the checkout: " + ", ".join(left[:10]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- service fixtures (tests/test_api*.py, test_service*.py, test_worker*.py) -----------------

SERVICE_REDIS_DB = 13      # a Redis database of its own; keys carry a per-run prefix as well


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny untrained melody network saved as a checkpoint: enough for the service to
    generate (the grammar, key and range masks hold whatever the weights are)."""
    from model.network.checkpoint import save_checkpoint
    from model.network.melody import MelodyNetwork, NetworkConfig
    from model.representation.tokens import MelodyTokenizer, TokenizerConfig

    tokenizer = MelodyTokenizer(TokenizerConfig())
    torch.manual_seed(0)
    network = MelodyNetwork(NetworkConfig(vocab_size=tokenizer.vocab_size, embedding_dim=8, hidden_size=16,
                                          num_layers=1, dropout=0.0))
    path = tmp_path_factory.mktemp("tiny-model") / "tiny.pt"
    save_checkpoint(path, network, tokenizer, metrics={"note": "untrained, for tests"})
    return path


TINY_STYLES = ("german", "chinese")    # a model that knows two of the three styles (not irish)


@pytest.fixture(scope="session")
def tiny_style_checkpoint(tmp_path_factory):
    """The tiny network with a style input (TINY_STYLES), untrained: a model a request may name a style for."""
    from model.network.checkpoint import save_checkpoint
    from model.network.melody import MelodyNetwork, NetworkConfig
    from model.representation.tokens import MelodyTokenizer, TokenizerConfig

    tokenizer = MelodyTokenizer(TokenizerConfig())
    torch.manual_seed(0)
    network = MelodyNetwork(NetworkConfig(vocab_size=tokenizer.vocab_size, embedding_dim=8, hidden_size=16,
                                          num_layers=1, dropout=0.0, style_dim=4, styles=TINY_STYLES))
    path = tmp_path_factory.mktemp("tiny-style-model") / "tiny-style.pt"
    save_checkpoint(path, network, tokenizer, metrics={"note": "untrained, for tests"})
    return path


@pytest.fixture(scope="session")
def redis_base_url():
    import redis
    url = f"redis://127.0.0.1:6379/{SERVICE_REDIS_DB}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.fail("the service tests need Redis at 127.0.0.1:6379 (scripts/test.sh starts one)")
    return url


def service_environment(home, checkpoint, redis_url) -> dict:
    """Environment for service processes: their own storage folder and Redis key prefix."""
    import uuid
    return {"REDIS_URL": redis_url, "TUNESMITH_HOME": str(home),
            "TUNESMITH_KEY_PREFIX": f"tstest-{uuid.uuid4().hex[:10]}:",
            "TUNESMITH_DEFAULT_MODEL": str(checkpoint), "TUNESMITH_TOKEN": "test-token"}


def forget_keys(env) -> None:
    """Delete every Redis key a test run wrote (they all carry its prefix)."""
    import redis
    client = redis.Redis.from_url(env["REDIS_URL"])
    for key in client.scan_iter(match=f"{env['TUNESMITH_KEY_PREFIX']}*", count=500):
        client.delete(key)


@pytest.fixture
def service_env(tmp_path, tiny_checkpoint, redis_base_url):
    env = service_environment(tmp_path / "home", tiny_checkpoint, redis_base_url)
    yield env
    forget_keys(env)


@pytest.fixture
def app(service_env, monkeypatch):
    """The Flask app on the test service environment (a module may define its own `app` instead)."""
    from service import create_app
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    return create_app()
