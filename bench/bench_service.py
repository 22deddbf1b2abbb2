"""The service under load, over real HTTP: `tunesmith serve` (embedded broker, gunicorn, one generate
worker with the model and its batcher in it) on 127.0.0.1, driven by 1, 8, 32 and 128 concurrent
clients, each asking for 16-bar melodies at the default settings, one after another; then the same
with batching off (TUNESMITH_BATCHING=0: the batcher runs one request at a time) as the baseline.
First, in the same run, the model's own speed: the same requests from as many threads of this
process to a `worker.batcher.Batcher` of the default model (with each melody's MIDI), so the
service's throughput is reported as a share of it.

A client's request (`--client wait`, the default): POST /api/v1/melodies with `Prefer: wait=30` and
`Accept: audio/midi`, whose answer is the MIDI itself ("submit to MIDI" ends when its bytes are in;
a 202 is followed as below). `--client stream`: POST, follow GET /api/v1/jobs/<id>/events to the end
state (the time to its first streamed bar is "first note"), then GET the MIDI. Where the stream is
refused (503: the API holds its maximum), the client polls the job every 50 ms instead; those are
counted. Each level also reports the CPU time each part of the service (API, the generate worker,
the train worker, Redis) and the bench's own clients spent per melody served, and is bounded in
requests and in seconds. Before the load: the seconds from starting `serve` to /readyz answering
200, the first melody's submit-to-MIDI after that, and the proportional set size (PSS, from
/proc/<pid>/smaps_rollup) of all of serve's processes once idle.

    python bench/bench_service.py [--clients 1,8,32,128] [--requests 400] [--seconds 30] [--client wait|stream] [--write]
    python bench/bench_service.py --checkout /path/to/another/checkout --client stream   # its service and batcher, same bench

The clients run in this process (threads), on the same machine: they take CPU from the service.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks_doc import cpu_model, replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TITLE = "Service under load"
FINISHED = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`python -m service.cli serve` in its own home folder (embedded Redis), batching on or off."""

    def __init__(self, batching: bool, streams: int, concurrency: int):
        self.home = tempfile.mkdtemp(prefix="tunesmith-bench-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update({"TUNESMITH_HOME": self.home, "TUNESMITH_BATCHING": "1" if batching else "0",
                    "TUNESMITH_MAX_STREAMS": str(streams), "TUNESMITH_GENERATE_CONCURRENCY": str(concurrency),
                    "OMP_NUM_THREADS": "1",
                    # every bench client is 127.0.0.1: one client to admission control, so no per-client limits
                    "TUNESMITH_RATE_LIMIT": "", "TUNESMITH_MAX_CLIENT_WORK": "100000000"})
        self.log = open(Path(self.home) / "serve.log", "wb")
        started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
                                        cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("serve exited: " + (Path(self.home) / "serve.log").read_text()[-2000:])
            try:
                if requests.get(self.base + "/readyz", timeout=60).status_code == 200:
                    self.ready_s = time.perf_counter() - started
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("the service was not ready within 240 s")

    def close(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


class StreamRefused(Exception):
    """The API would not open the event stream (it holds its maximum)."""


def job_events(session, base: str, job_id: str):
    """(kind, data) of each server-sent event of a job, as they arrive; StreamRefused without a stream."""
    with session.get(f"{base}/api/v1/jobs/{job_id}/events", stream=True, timeout=120) as stream:
        if stream.status_code != 200:
            raise StreamRefused(stream.status_code)
        kind = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                yield kind, json.loads(line[6:])


def one_request(session, base: str, bars: int, client: str = "stream") -> dict:
    """One client request; returns its times (seconds from the submit) or its error."""
    t0 = time.perf_counter()
    out = {"first_note": None, "midi": None, "error": None, "polled": False}
    wait = {"Prefer": "wait=30", "Accept": "audio/midi"} if client == "wait" else {}
    response = session.post(f"{base}/api/v1/melodies", json={"bars": bars}, headers=wait, timeout=60)
    if response.status_code == 200 and wait:
        if not response.content.startswith(b"MThd"):
            out["error"] = "the answer was not MIDI"
        out["midi"] = time.perf_counter() - t0
        return out
    if response.status_code != 202:
        out["error"] = f"submit HTTP {response.status_code}"
        return out
    job_id = response.json()["id"]
    end = None
    try:
        for kind, data in job_events(session, base, job_id):
            if kind == "bar" and out["first_note"] is None:
                out["first_note"] = time.perf_counter() - t0
            if kind == "state" and data["state"] in FINISHED:
                end = data
                break
    except StreamRefused:
        out["polled"] = True
    if end is None:                               # no stream to be had: poll the job
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            record = session.get(f"{base}/api/v1/jobs/{job_id}", timeout=30).json()
            if record["state"] in FINISHED:
                end = record
                break
            time.sleep(0.05)
    if end is None or end["state"] != "succeeded":
        out["error"] = f"job {end['state'] if end else 'unfinished'}: {end.get('error') if end else ''}"
        return out
    midi = session.get(base + end["result"]["melodies"][0]["midi"], timeout=30)
    if midi.status_code != 200 or not midi.content.startswith(b"MThd"):
        out["error"] = f"MIDI HTTP {midi.status_code}"
        return out
    out["midi"] = time.perf_counter() - t0
    return out


def run_level(base: str, clients: int, max_requests: int, max_seconds: float, bars: int, client_kind="stream",
              request=None) -> dict:
    """`clients` threads sending requests one after another (`request(session)`: one_request by default)."""
    request = request or (lambda session: one_request(session, base, bars, client_kind))
    results, lock = [], threading.Lock()
    started = time.perf_counter()
    budget = [max_requests]

    def client():
        session = requests.Session()
        while time.perf_counter() - started < max_seconds:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            try:
                r = request(session)
            except requests.RequestException as exc:
                r = {"first_note": None, "midi": None, "error": type(exc).__name__, "polled": False}
            with lock:
                results.append(r)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ok = [r for r in results if r["error"] is None]
    lat = sorted(r["midi"] for r in ok)
    first = sorted(r["first_note"] for r in ok if r["first_note"] is not None)
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")  # noqa: E731
    errors = [r["error"] for r in results if r["error"]]
    return {"clients": clients, "requests": len(results), "ok": len(ok), "errors": len(errors),
            "error_kinds": sorted(set(errors))[:3], "polled": sum(r["polled"] for r in results),
            "seconds": wall, "per_s": len(ok) / wall,
            "p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "p99": pct(lat, 0.99),
            "first_p50": pct(first, 0.5), "first_p95": pct(first, 0.95)}


def _label(cmdline: str) -> str | None:
    """Which part of the service a process is, from its command line."""
    for needle, label in (("redis-server", "redis"), ("worker.engine", "engine"), ("gunicorn", "api (gunicorn)"),
                          ("-Q generate", "generate worker"), ("-Q train", "train worker"),
                          ("service.cli", "serve (supervisor)")):
        if needle in cmdline:
            return label
    return None


def service_processes(root: int) -> list[int]:
    """The pids of `root` and every process below it."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    below = {root}
    changed = True
    while changed:
        more = {pid for pid, parent in parents.items() if parent in below} - below
        below |= more
        changed = bool(more)
    return sorted(below)


def pss_mb(root: int) -> tuple[float, int]:
    """(proportional set size in MB of `root` and everything below it, how many processes)."""
    total, pids = 0, service_processes(root)
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024, len(pids)


def batcher_alone(clients: int, max_requests: int, max_seconds: float, bars: int) -> dict:
    """The default model's own speed: `clients` threads of this process submitting the same requests
    (at the defaults, `bars` bars) to one Batcher and writing each melody's MIDI, one after another."""
    import torch
    from model.generation.params import GenerationParams
    from model.generation.sampling import Generator
    from worker.batcher import Batcher
    torch.set_num_threads(1)
    batcher = Batcher(Generator())
    try:
        batcher.submit(GenerationParams(bars=bars)).result(120)          # warm up

        def request(session):
            t0 = time.perf_counter()
            generation = batcher.submit(GenerationParams(bars=bars)).result(120)
            assert generation.melodies[0].midi_bytes().startswith(b"MThd")
            return {"first_note": None, "midi": time.perf_counter() - t0, "error": None, "polled": False}
        return run_level("", clients, max_requests, max_seconds, bars, request=request)
    finally:
        batcher.close()


def service_cpu(root: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of each part of the service: the processes under `root`,
    summed by part. A process that exited since the last reading loses its share (pool processes,
    the engine and gunicorn's workers live as long as the service)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, cpu = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        cpu[pid] = ((int(fields[11]) + int(fields[12])) / tick, cmdline)
    totals: dict[str, float] = {}
    for pid, (seconds, cmdline) in cpu.items():
        p = pid
        while p not in (root, 0, 1) and p in parents:
            p = parents[p]
        if p == root:
            label = _label(cmdline) or "other"
            totals[label] = totals.get(label, 0.0) + seconds
    return totals


def metric(base: str, name: str) -> float:
    text = requests.get(base + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--requests", type=int, default=400, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=30, help="most seconds per level")
    parser.add_argument("--bars", type=int, default=16)
    parser.add_argument("--modes", default="on,off", help="batching on, off or both")
    parser.add_argument("--client", choices=("wait", "stream"), default="wait",
                        help="wait: one POST with Prefer: wait and Accept: audio/midi; stream: POST, events, GET the MIDI")
    parser.add_argument("--streams", type=int, default=64, help="TUNESMITH_MAX_STREAMS per API process")
    parser.add_argument("--concurrency", type=int, default=32, help="TUNESMITH_GENERATE_CONCURRENCY")
    parser.add_argument("--checkout", default=None, help="run the service and batcher of this checkout (default: this one)")
    parser.add_argument("--write", action="store_true", help=f"write the '{TITLE}' section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    global ROOT
    if args.checkout:                       # serve (and the batcher alone) from another checkout: a paired comparison
        ROOT = Path(args.checkout).resolve()
        sys.path.insert(0, str(ROOT))
    levels = [int(c) for c in args.clients.split(",")]
    load_before = os.getloadavg()
    rows, alone, starts = [], {}, []
    for clients in levels:
        own_before = time.process_time()
        alone[clients] = batcher_alone(clients, args.requests, args.seconds, args.bars)
        alone[clients]["cpu_ms"] = (time.process_time() - own_before) * 1000 / max(1, alone[clients]["ok"])
        print(json.dumps({"batcher alone": clients, "per_s": round(alone[clients]["per_s"], 1),
                          "p50": round(alone[clients]["p50"], 1), "cpu_ms": round(alone[clients]["cpu_ms"], 1)}), flush=True)
    for mode in args.modes.split(","):
        service = Service(mode == "on", args.streams, args.concurrency)
        try:
            first = one_request(requests.Session(), service.base, args.bars, args.client)
            time.sleep(2)
            pss, processes = pss_mb(service.process.pid)
            starts.append({"mode": mode, "ready_s": service.ready_s, "first_ms": (first["midi"] or float("nan")) * 1000,
                           "pss_mb": pss, "processes": processes})
            print(json.dumps(starts[-1]), flush=True)
            for _ in range(2):                   # warm up: music21 is imported, gunicorn's workers answer
                one_request(requests.Session(), service.base, args.bars, args.client)
            for clients in levels:
                cpu_before, own_before = service_cpu(service.process.pid), time.process_time()
                row = run_level(service.base, clients, args.requests, args.seconds, args.bars, args.client)
                cpu_after, own = service_cpu(service.process.pid), time.process_time() - own_before
                spent = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
                spent["bench clients"] = own
                row["cpu_ms_per_melody"] = {k: round(v * 1000 / max(1, row["ok"]), 1) for k, v in sorted(spent.items())}
                row["mode"] = mode
                row["share"] = row["per_s"] / alone[clients]["per_s"] if alone[clients]["per_s"] else float("nan")
                row["rows_mean"] = metric(service.base, "tunesmith_batch_rows_sum") / \
                    max(1.0, metric(service.base, "tunesmith_batch_rows_count"))
                rows.append(row)
                print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        finally:
            service.close()
    load_after = os.getloadavg()
    if args.write:
        write(rows, alone, starts, args, load_before, load_after)


def write(rows, alone, starts, args, load_before, load_after) -> None:
    command = "python bench/bench_service.py --write" + (f" --clients {args.clients}" if args.clients != "1,8,32,128" else "") \
        + (f" --requests {args.requests}" if args.requests != 400 else "") + (f" --seconds {args.seconds:g}" if args.seconds != 30 else "") \
        + (f" --modes {args.modes}" if args.modes != "on,off" else "") + (f" --client {args.client}" if args.client != "wait" else "")
    lines = [f"## {TITLE}", "",
             f"Measured {date.today().isoformat()} with `{command}` ({os.cpu_count()} CPU cores of an {cpu_model()}, "
             f"1-minute load average {load_before[0]:.2f} before the run, "
             f"{load_after[0]:.2f} after). `tunesmith serve` with its embedded Redis, 2 gunicorn processes, "
             f"one generate worker holding {args.concurrency} jobs (its threads) around its batcher; "
             f"{args.bars}-bar melodies at the defaults (the shipped model), asked for as `--client {args.client}` "
             "(see the script's docstring); each client sends its next request "
             f"when the last one's MIDI is in; no request of a level starts after its {args.requests}th or after "
             f"{args.seconds:g} s, and its time runs until the last one is done. The clients are threads of the bench process on the same cores. "
             "\"first note\": submit to the first streamed bar; \"rows/step\": mean melodies per network step "
             "since the service started (from /metrics); \"of batcher\": the service's melodies/s over the "
             "in-process batcher's at the same number of clients, measured first in the same run.", "",
             "| batcher alone: clients | melodies/s | p50 ms | CPU ms per melody |", "|---|---|---|---|"]
    lines += [f"| {c} | {a['per_s']:.1f} | {a['p50']:.0f} | {a['cpu_ms']:.1f} |" for c, a in alone.items()]
    lines += ["", "| batching | ready s | first melody after ready ms | idle PSS MB | processes |", "|---|---|---|---|---|"]
    lines += [f"| {s['mode']} | {s['ready_s']:.1f} | {s['first_ms']:.0f} | {s['pss_mb']:.0f} | {s['processes']} |"
              for s in starts]
    lines += ["", "| batching | clients | requests | errors | melodies/s | of batcher | p50 ms | p95 ms | p99 ms | "
              "first note p50 ms | first note p95 ms | polled | rows/step |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['per_s']:.1f} | "
                     f"{100 * r['share']:.0f} % | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {r['first_p50']:.0f} | "
                     f"{r['first_p95']:.0f} | {r['polled']} | {r['rows_mean']:.1f} |")
    parts = sorted({k for r in rows for k in r["cpu_ms_per_melody"]} - {"serve (supervisor)"})
    lines += ["", "CPU time per melody served, by part of the service (user + system seconds of its processes "
              "during the level, read from /proc, over the melodies served; the machine has "
              f"{os.cpu_count()} cores, so {os.cpu_count() * 1000} ms of CPU per second in all):", "",
              "| batching | clients | " + " | ".join(parts) + " | all |",
              "|---|---|" + "---|" * (len(parts) + 1)]
    for r in rows:
        cpu = r["cpu_ms_per_melody"]
        lines.append(f"| {r['mode']} | {r['clients']} | " + " | ".join(f"{cpu.get(k, 0.0):.1f}" for k in parts)
                     + f" | {sum(cpu.get(k, 0.0) for k in parts):.1f} |")
    replace_section(TITLE, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
