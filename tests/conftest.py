"""Shared test setup: one torch thread per process, deterministic seeds."""
import os

os.environ.setdefault("TUNESMITH_CACHE", os.path.join(os.path.dirname(__file__), "..", "var", "test-cache"))

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- service fixtures (tests/test_api*.py, test_service*.py, test_worker*.py) -----------------

SERVICE_REDIS_DB = 13      # a Redis database of its own; keys carry a per-run prefix as well


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny untrained melody network saved as a checkpoint: enough for the service to
    generate (the grammar, key and range masks hold whatever the weights are)."""
    from model.checkpoint import save_checkpoint
    from model.network import MelodyNetwork, NetworkConfig
    from model.tokens import MelodyTokenizer, TokenizerConfig

    tokenizer = MelodyTokenizer(TokenizerConfig())
    torch.manual_seed(0)
    network = MelodyNetwork(NetworkConfig(vocab_size=tokenizer.vocab_size, embedding_dim=8, hidden_size=16,
                                          num_layers=1, dropout=0.0))
    path = tmp_path_factory.mktemp("tiny-model") / "tiny.pt"
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
