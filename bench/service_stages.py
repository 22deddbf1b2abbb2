"""Where one client's submit-to-MIDI time goes: `tunesmith serve` (embedded broker, batching on)
on 127.0.0.1, 25 sequential 16-bar requests (the first 5 dropped as warm-up), each split into
stages from the client's clock and the job record's timestamps (milliseconds, same machine).

    python bench/service_stages.py

Prints this run's medians only.
"""
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import FINISHED, Service, job_events  # noqa: E402


def stamp(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def one(session, base: str) -> dict:
    t0 = time.time()
    job_id = session.post(f"{base}/api/v1/melodies", json={"bars": 16}, timeout=30).json()["id"]
    submitted = time.time()
    first = last = None
    for kind, data in job_events(session, base, job_id):
        if kind == "bar":
            first, last = first or time.time(), time.time()
        if kind == "state" and data["state"] in FINISHED:
            break
    ended = time.time()
    record = session.get(f"{base}/api/v1/jobs/{job_id}", timeout=30).json()
    session.get(base + record["result"]["melodies"][0]["midi"], timeout=30)
    done = time.time()
    created, started, finished = (stamp(record[k]) for k in ("created_at", "started_at", "finished_at"))
    return {"submit (HTTP)": submitted - t0, "queued (record created to started)": started - created,
            "started to first streamed bar": first - started, "first to last streamed bar": last - first,
            "last bar to finished": finished - last, "finished to end event": ended - finished,
            "MIDI download": done - ended, "total": done - t0}


def main() -> int:
    service = Service(batching=True, streams=64, concurrency=32)
    try:
        session = requests.Session()
        rows = [one(session, service.base) for _ in range(25)][5:]
    finally:
        service.close()
    for name in rows[0]:
        print(f"| {name} | {1000 * statistics.median(r[name] for r in rows):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
