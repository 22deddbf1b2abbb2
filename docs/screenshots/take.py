"""Retakes docs/screenshots/compose.png with the shipped model (the browser tests take theirs with a
tiny untrained model, so their melody is noise).

    python docs/screenshots/take.py

Starts `tunesmith serve` on a free port (embedded Redis, a temporary home), composes 8 bars in
D major in Debian's headless chromium (Irish style, form AABB, over the chords D | G | A7 | D twice,
with chord symbols and an accompaniment), starts playback and saves the page.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tempfile.mkdtemp(prefix="tunesmith-shots-")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TUNESMITH_DEFAULT_MODEL")}
    env.update(TUNESMITH_HOME=home, TUNESMITH_TOKEN="screenshots")
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(base + "/readyz", timeout=5).status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/")
            page.fill("#bars", "8")
            page.select_option("#key", "D")
            page.select_option("#scale", "major")
            page.select_option("#style", "irish")
            page.fill("#form", "AABB")
            page.fill("#chords", "D | G | A7 | D")
            page.check("#harmonize")
            page.fill("#seed", "2026")
            page.click("#generate")
            page.wait_for_function("() => document.body.dataset.melody", timeout=120_000)
            page.click("#play")
            page.wait_for_selector("#pianoroll rect.note.playing", state="attached")
            page.screenshot(path=str(ROOT / "docs" / "screenshots" / "compose.png"), full_page=True)
            browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)


if __name__ == "__main__":
    main()
