"""The web pages in a real headless Chromium (Debian's `chromium`, driven by Playwright for
Python; no browser is ever downloaded) against a real running service: `tunesmith serve` (gunicorn, one Celery
worker per queue) on the Redis at 127.0.0.1:6379.

The composing page generates a melody; its piano roll must hold exactly the notes of the MIDI
the service serves (parsed with mido), play must start the audio clock with no console errors,
and the download link must serve MIDI that mido reads. Its Harmony fields must reach the API, a
melody with chords must show them on the notation and the roll and play its accompaniment (which
mutes), and an unknown chord must be named beside the Chords field. The training page trains a tiny model on
an uploaded zip of MIDI files and must draw its loss curve.

Set TUNESMITH_SCREENSHOTS=1 to write docs/screenshots/compose.png and train.png.
"""
import base64
import io
import json
import os
import random
import shutil
import urllib.request
import uuid
import zipfile
from pathlib import Path

import mido
import pytest

from conftest import forget_keys, service_environment
from support import serving

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
ROOT = Path(__file__).resolve().parents[1]
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")]


# ---- the service --------------------------------------------------------------------------

def tiny_corpus_zip(tunes: int = 100, seed: int = 0) -> bytes:
    """A zip of short 4/4 MIDI tunes: stepwise walks in C major, 4 bars of 8th and quarter notes."""
    import pretty_midi

    rng = random.Random(seed)
    scale = [60, 62, 64, 65, 67, 69, 71, 72, 74]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(tunes):
            pm = pretty_midi.PrettyMIDI(initial_tempo=120)
            pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0))
            inst = pretty_midi.Instrument(0)
            t, degree = 0.0, rng.randrange(len(scale))
            while t < 8.0 - 1e-9:                     # 4 bars at 120 BPM = 8 s
                length = min(rng.choice([0.25, 0.5, 0.5]), 8.0 - t)
                degree = min(len(scale) - 1, max(0, degree + rng.choice([-2, -1, 1, 2])))
                inst.notes.append(pretty_midi.Note(90, scale[degree], t, t + length))
                t += length
            pm.instruments.append(inst)
            out = io.BytesIO()
            pm.write(out)
            zf.writestr(f"tune{i:03d}.mid", out.getvalue())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_checkpoint, redis_base_url):
    """`python -m service.cli serve` (gunicorn + a generate worker + a train worker) on a free
    port, with the tiny untrained model as the default; the fixtures are tests/conftest.py's."""
    home = tmp_path_factory.mktemp("browser-home")
    env = {**os.environ, **service_environment(home, tiny_checkpoint, redis_base_url)}
    try:
        with serving(home, env) as base:
            yield {"base": base, "home": home, "token": env["TUNESMITH_TOKEN"]}
    finally:
        forget_keys(env)


# ---- the browser ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield b
        b.close()


# Every violation of the Content-Security-Policy (service/headers.py) becomes a console error, so the
# tests that assert page.problems == [] fail on any: what the page loads or runs that the policy refuses.
# wait_for_function is given functions ("() => ..."): a bare expression is eval'd in the page, which the
# policy refuses as it should.
REPORT_CSP_VIOLATIONS = """document.addEventListener("securitypolicyviolation", e =>
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));"""


@pytest.fixture
def page(browser):
    """A fresh page; page.problems collects console errors (CSP violations included) and uncaught exceptions."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.add_init_script(REPORT_CSP_VIOLATIONS)
    pg = context.new_page()
    pg.problems = []
    pg.on("console", lambda m: pg.problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.problems.append(f"pageerror: {e}"))
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def screenshot(pg, name, tmp_path):
    folder = ROOT / "docs" / "screenshots" if os.environ.get("TUNESMITH_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(folder / name), full_page=True)


def midi_note_count(data: bytes) -> int:
    midi = mido.MidiFile(file=io.BytesIO(data))
    return sum(1 for track in midi.tracks for m in track if m.type == "note_on" and m.velocity > 0)


# ---- the composing page -----------------------------------------------------------------------

def test_compose_generate_play_and_download(service, page, tmp_path):
    page.goto(service["base"] + "/")
    page.fill("#bars", "4")
    page.select_option("#key", "D")
    page.select_option("#scale", "minor")
    page.fill("#seed", "1234")
    page.click("#compose-form summary")
    page.fill("#min_pitch", "60")
    page.fill("#max_pitch", "79")
    page.uncheck("#short_term")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/v1/melodies")) as sent:
        page.click("#generate")
    assert sent.value.post_data_json["short_term"] is False  # the checkbox reached the request
    # the Ending control's default, "Leaning home", is the API's default: neither field is sent
    assert "cadence" not in sent.value.post_data_json and "tonic_pull" not in sent.value.post_data_json
    page.wait_for_function("() => document.body.dataset.melody", timeout=90_000)
    assert page.get_attribute("body", "data-job") == "succeeded"

    # The piano roll draws exactly the notes of the MIDI the service serves.
    href = page.get_attribute("#downloads a[data-format=midi]", "href")
    with urllib.request.urlopen(service["base"] + href, timeout=10) as response:
        served = response.read()
    expected = midi_note_count(served)
    assert expected > 0
    pitches = page.evaluate("[...document.querySelectorAll('#pianoroll rect.note')].map(r => +r.dataset.pitch)")
    assert min(pitches) >= 60 and max(pitches) <= 79          # the range fields reached the API
    assert int(page.get_attribute("#pianoroll svg", "data-note-count")) == expected
    assert page.locator("#pianoroll rect.note").count() == expected
    # Notation: every written note head (tied pieces included) was drawn.
    written = int(page.get_attribute("#notation", "data-written-notes"))
    assert written >= expected
    assert int(page.get_attribute("#notation", "data-drawn-notes")) == written

    # Play: the audio clock runs and the playing note is highlighted; Stop ends it.
    page.click("#play")
    page.wait_for_function("() => document.body.dataset.player === 'playing'"
                           " && window.tunesmith.player.context.state === 'running'")
    start = page.evaluate("window.tunesmith.player.context.currentTime")
    page.wait_for_function(f"() => window.tunesmith.player.context.currentTime > {start} + 0.3")
    page.wait_for_selector("#pianoroll rect.note.playing", state="attached")
    screenshot(page, "compose.png", tmp_path)
    page.click("#stop")
    page.wait_for_function("() => document.body.dataset.player === 'stopped'")
    assert page.locator("#pianoroll rect.note.playing").count() == 0
    assert page.problems == [], page.problems

    # The download link serves MIDI that mido reads, with the same notes.
    with page.expect_download() as info:
        page.click("#downloads a[data-format=midi]")
    downloaded = Path(info.value.path()).read_bytes()
    assert midi_note_count(downloaded) == expected
    assert info.value.suggested_filename.endswith(".mid")

    # The melody is in this browser's history, and still there after a reload.
    page.reload()
    assert page.locator("#history li").count() == 1
    assert "seed 1234" in page.inner_text("#history li")


def test_same_seed_again_and_continue(service, page):
    page.goto(service["base"] + "/")
    page.fill("#bars", "2")
    page.fill("#seed", "77")
    page.click("#generate")
    page.wait_for_function("() => document.body.dataset.melody", timeout=90_000)
    first_id = page.get_attribute("body", "data-melody")
    first_notes = page.evaluate("window.tunesmith.current.parsed.notes.map(n => [n.pitch, n.startBeat])")

    page.click("#generate")                      # same seed again: the same notes
    page.wait_for_function(f"() => document.body.dataset.melody && document.body.dataset.melody !== '{first_id}'",
                           timeout=90_000)
    assert page.evaluate("window.tunesmith.current.parsed.notes.map(n => [n.pitch, n.startBeat])") == first_notes

    second_id = page.get_attribute("body", "data-melody")
    page.click("#again")                         # a new seed, shown in the seed field
    page.wait_for_function(f"() => document.body.dataset.melody !== '{second_id}'", timeout=90_000)
    assert page.input_value("#seed") != "77"

    # Continue: this melody becomes the primer; the next one starts with its notes.
    third_id = page.get_attribute("body", "data-melody")
    primer = page.evaluate("window.tunesmith.current.parsed.notes.map(n => [n.pitch, n.startBeat, n.endBeat])")
    page.click("#continue")
    page.wait_for_function(f"() => document.body.dataset.melody !== '{third_id}'", timeout=90_000)
    continued = page.evaluate("window.tunesmith.current.parsed.notes.map(n => [n.pitch, n.startBeat, n.endBeat])")
    # the primer's notes come back unchanged, except that the continuation may hold its last note on
    # (HOLD after the primer's final note is a legal first step: that note then ends later)
    assert continued[:len(primer) - 1] == primer[:-1]
    assert continued[len(primer) - 1][:2] == primer[-1][:2] and continued[len(primer) - 1][2] >= primer[-1][2]
    assert len(continued) > len(primer)
    assert page.locator("#history li").count() == 4


def test_the_ending_control_asks_for_a_cadence_or_turns_the_pull_off(service, page):
    page.goto(service["base"] + "/")
    page.fill("#bars", "2")
    sent_bodies = []
    for choice in ("tonic", "free"):
        page.select_option("#cadence", choice)
        melody = page.get_attribute("body", "data-melody")
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/v1/melodies")) as sent:
            page.click("#generate")
        sent_bodies.append(sent.value.post_data_json)
        page.wait_for_function(f"() => document.body.dataset.melody && document.body.dataset.melody !== '{melody}'",
                               timeout=90_000)
        assert page.get_attribute("body", "data-job") == "succeeded"
    assert sent_bodies[0]["cadence"] == "tonic" and "tonic_pull" not in sent_bodies[0]
    assert sent_bodies[1]["tonic_pull"] == 0 and "cadence" not in sent_bodies[1]


def test_the_form_controls_ask_for_a_form_and_a_pickup(service, page):
    page.goto(service["base"] + "/")
    page.fill("#bars", "4")
    page.fill("#seed", "5")
    page.fill("#form", "AA")
    page.select_option("#pickup", "true")
    page.click("#compose-form summary")
    page.check("#form_strict")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/v1/melodies")) as sent:
        page.click("#generate")
    body = sent.value.post_data_json
    assert body["form"] == "AA" and body["form_strict"] is True and body["pickup"] is True
    assert "phrase_bars" not in body
    page.wait_for_function("() => document.body.dataset.melody", timeout=90_000)
    assert page.get_attribute("body", "data-job") == "succeeded"
    notes = page.evaluate("window.tunesmith.current.parsed.notes.map(n => [n.pitch, n.startBeat, n.endBeat])")
    first = [n for n in notes if n[1] < 8]
    assert first and first[0][1] > 0                                     # a pickup: the first beat is a rest
    assert [n for n in notes if n[1] >= 8] == [[p, s + 8, e + 8] for p, s, e in first]  # A again, note for note
    page.fill("#form", "AXB")                                            # a bad form: named next to its field
    page.click("#generate")
    error = page.locator('.field-error[data-for="form"]')
    error.wait_for(state="visible")
    assert "A-H" in error.inner_text()


def test_the_style_control_offers_the_chosen_models_styles(service, page, tiny_style_checkpoint):
    from worker.registry import ModelRegistry
    name = ModelRegistry(service["home"]).register("styled", tiny_style_checkpoint, {"data": "test"})
    page.goto(service["base"] + "/")
    page.wait_for_selector(f"#model option[value='{name}']", state="attached")
    assert page.is_disabled("#style")                    # the default (tiny) model has no style input: Any only
    assert page.eval_on_selector_all("#style option", "os => os.map(o => o.value)") == [""]
    assert "has no style input" in page.inner_text("#style-help")
    page.select_option("#model", name)
    assert page.eval_on_selector_all("#style option", "os => os.map(o => o.value)") == ["", "german", "chinese"]
    page.select_option("#style", "chinese")
    assert page.inner_text("#style-help") == "Chinese folk songs (Essen han1, han2)."
    page.fill("#bars", "2")
    page.fill("#seed", "3")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/v1/melodies")) as sent:
        page.click("#generate")
    assert sent.value.post_data_json["style"] == "chinese" and sent.value.post_data_json["model"] == name
    page.wait_for_function("() => document.body.dataset.melody", timeout=90_000)
    assert page.get_attribute("body", "data-job") == "succeeded"
    page.select_option("#model", "")                    # back to the default: its (no) styles again
    assert page.is_disabled("#style") and page.input_value("#style") == ""
    assert page.problems == [], page.problems


def test_api_field_errors_appear_next_to_their_field(service, page):
    page.goto(service["base"] + "/")
    page.fill("#temperature", "9")
    page.fill("#top_p", "1.5")
    page.click("#generate")
    error = page.locator('.field-error[data-for="temperature"]')
    error.wait_for(state="visible")
    assert "temperature" in error.inner_text() and "5" in error.inner_text()
    assert "top_p" in page.inner_text('.field-error[data-for="top_p"]')
    assert page.get_attribute("#temperature", "aria-invalid") == "true"
    assert page.inner_text('.field-error[data-for="bars"]') == ""
    assert page.evaluate("document.activeElement.id") == "temperature"   # focus moves to the first bad field


def test_keyboard_and_phone_width(service, page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(service["base"] + "/")
    # Nothing wider than the screen: no sideways scrolling of the page itself.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.fill("#bars", "2")
    page.focus("#bars")
    page.keyboard.press("Enter")                 # submits the form
    page.wait_for_function("() => document.body.dataset.melody", timeout=90_000)
    page.focus("#play")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.body.dataset.player === 'playing'")
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.body.dataset.player === 'stopped'")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.problems == [], page.problems
    page.goto(service["base"] + "/train")
    page.wait_for_selector("#models tr")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.problems == [], page.problems


def test_training_page_asks_for_the_token(service, page):
    page.goto(service["base"] + "/train")
    page.fill("#token", "not-the-token")
    page.click("#start")
    error = page.locator('.field-error[data-for="token"]')
    error.wait_for(state="visible")
    assert "token" in error.inner_text()
    assert page.is_hidden("#training")                  # no job was started


def test_the_pages_run_under_the_content_security_policy(service, page):
    for path in ("/", "/train", "/api/v1/docs"):
        response = page.goto(service["base"] + path)
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
    page.wait_for_selector(".swagger-ui .info")                 # Swagger UI started from its own file
    assert page.locator(".opblock").count() > 5
    assert page.problems == [], page.problems
    # the policy is enforced, and the test sees it: an inline script is refused and reported
    page.goto(service["base"] + "/")
    with page.expect_console_message(lambda m: "CSP violation" in m.text) as refused:
        page.evaluate("""() => { const s = document.createElement("script");
                                 s.textContent = "window.inlineRan = true"; document.body.append(s); }""")
    assert "script-src" in refused.value.text
    assert page.evaluate("window.inlineRan") is None


# ---- the training page ------------------------------------------------------------------------

def test_training_page_shows_loss_curve_and_sets_default(service, page, tmp_path):
    corpus = tmp_path / "tiny-corpus.zip"
    corpus.write_bytes(tiny_corpus_zip())
    name = f"browser-{uuid.uuid4().hex[:6]}"

    page.goto(service["base"] + "/train")
    page.check("input[name=source][value=upload]")
    page.set_input_files("#file", str(corpus))
    page.wait_for_function("() => document.getElementById('tunes').value === '100'")  # the zip's 100 entries
    page.wait_for_function("() => document.getElementById('recipe-preview').textContent.includes('batch 8')")
    assert page.inner_text("#recipe-preview").startswith("Fine-tunes the shipped model")
    page.check("#from_scratch")
    page.wait_for_function("() => document.getElementById('recipe-preview').textContent.startsWith('From scratch')")
    assert "transposition -5..+6" in page.inner_text("#recipe-preview")
    page.fill("#name", name)
    page.fill("#epochs", "2")
    page.fill("#max_minutes", "3")
    page.fill("#hidden_size", "16")
    page.fill("#layers", "1")
    page.fill("#bptt", "16")
    page.click("summary")
    page.fill("#embedding_dim", "8")
    page.fill("#batch_size", "8")
    page.fill("#token", service["token"])
    page.click("#start")
    page.wait_for_function("() => ['succeeded', 'failed', 'cancelled'].includes(document.body.dataset.job)",
                           timeout=280_000)
    assert page.get_attribute("body", "data-job") == "succeeded", page.inner_text("#form-error")

    chart = page.locator("#loss-chart svg")
    assert int(chart.get_attribute("data-train-points")) >= 2     # one point per epoch at least
    assert int(chart.get_attribute("data-valid-points")) >= 1
    assert page.locator("#loss-chart polyline.train").count() == 1
    assert page.inner_text("#finished-name") == name
    live = page.inner_text("#live-figures")  # the record's recipe: the rule's choices beside the fields set
    assert "from scratch (from_scratch was asked for)" in live and "Chosen by the rule: lr, lr_patience" in live
    assert page.locator("#final-figures dd").count() > 0
    screenshot(page, "train.png", tmp_path)

    page.click("#make-default")
    page.wait_for_function(f"() => [...document.querySelectorAll('#models td')].some(td => td.textContent === '{name} (default)')")
    with urllib.request.urlopen(service["base"] + "/api/v1/models", timeout=10) as response:
        assert json.load(response)["default"] == name
    assert page.problems == [], page.problems


def test_compose_draws_streamed_bars_before_the_melody_is_finished(service, page):
    page.goto(service["base"] + "/")
    page.fill("#bars", "32")
    page.fill("#seed", "5")
    page.click("#generate")
    page.wait_for_function("() => document.body.dataset.melody", timeout=90_000)
    log = page.evaluate("window.tunesmith.streamLog")
    assert [e["bar"] for e in log] == list(range(32))           # every bar, in order, as it came
    assert log[0]["job"] == "running"                           # drawn while the job was still at work
    counts = [e["notes"] for e in log]
    assert counts == sorted(counts) and counts[-1] > 0
    assert page.locator("#pianoroll rect.note").count() == int(page.get_attribute("#pianoroll svg", "data-note-count"))

    # Play before the end: a job whose stream has sent two bars and not yet its end
    bars = "".join(
        f'event: bar\ndata: {{"melody":0,"bar":{b},"progress":0.1,"notes":[{{"pitch":{62 + b},"start_beats":{4 * b},'
        f'"end_beats":{4 * b + 2}}}]}}\n\n' for b in range(2))
    page.route("**/events", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        body='retry: 60000\n\nevent: state\ndata: {"state":"running","progress":0.1}\n\n' + bars))
    page.click("#again")
    page.wait_for_function("() => document.body.dataset.streamedBars === '2'")
    assert page.locator("#pianoroll rect.note").count() == 2
    assert page.get_attribute("body", "data-job") == "running"
    page.click("#play")
    page.wait_for_function("() => document.body.dataset.player === 'playing'"
                           " && window.tunesmith.player.context.state === 'running'")
    assert page.evaluate("window.tunesmith.player.notes.map(n => n.pitch)") == [62, 63]
    page.click("#stop")
    assert page.problems == [], page.problems


def test_bars_selected_on_the_piano_roll_are_regenerated_in_place(service, page):
    page.goto(service["base"] + "/")
    page.fill("#bars", "4")
    page.fill("#seed", "5")
    page.click("#generate")
    page.wait_for_function("() => document.body.dataset.melody", timeout=90_000)
    first_id = page.get_attribute("body", "data-melody")
    before = page.evaluate("window.tunesmith.current.parsed.notes.map(n => [n.pitch, n.startBeat, n.endBeat])")
    # click inside bar 2, shift-click inside bar 3: bars 2..3 are chosen and shaded
    box = page.locator("#pianoroll svg").bounding_box()
    geometry = page.evaluate("window.tunesmith.roll.geometry")
    scale = box["width"] / page.evaluate("window.tunesmith.roll.svg.viewBox.baseVal.width")
    for bar, modifiers in ((2, []), (3, ["Shift"])):
        x = box["x"] + (geometry["left"] + (bar - 0.5) * geometry["barW"]) * scale
        page.mouse.move(x, box["y"] + 10)
        page.click("#pianoroll svg", position={"x": x - box["x"], "y": 10}, modifiers=modifiers)
    assert (page.input_value("#regen-from"), page.input_value("#regen-to")) == ("2", "3")
    assert page.get_attribute("#pianoroll .bar-selection", "visibility") == "visible"
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/v1/melodies")) as sent:
        page.click("#regenerate")
    body = sent.value.post_data_json
    assert body["regenerate"] == {"from_bar": 2, "to_bar": 3} and body["primer"] and "bars" not in body
    page.wait_for_function(f"() => document.body.dataset.melody !== '{first_id}'", timeout=90_000)
    assert page.get_attribute("body", "data-job") == "succeeded"
    after = page.evaluate("window.tunesmith.current.parsed.notes.map(n => [n.pitch, n.startBeat, n.endBeat])")
    kept = lambda notes: [n for n in notes if n[2] <= 4 or n[1] >= 12]   # outside beats 4..12 (bars 2-3 of 4/4)
    assert kept(after) == kept(before)


# ---- harmony: a melody over given chords, estimated chords, the accompaniment ---------------------

CHORD_PCS = {"G": {7, 11, 2}, "C": {0, 4, 7}, "D7": {2, 6, 9, 0}}


def chord_symbols(pg, selector):
    """The chord symbols drawn in an element, in order, with abcjs's ♭ and ♯ written as b and #."""
    texts = pg.eval_on_selector_all(selector, "els => els.map(e => e.textContent.trim())")
    return [t.replace("♭", "b").replace("♯", "#") for t in texts]


def test_a_melody_over_given_chords_shows_them(service, page):
    page.goto(service["base"] + "/")
    assert page.is_hidden("#chord_tones")                   # Chord tones waits for chords
    page.fill("#bars", "2")
    page.fill("#seed", "11")
    page.select_option("#key", "G")
    page.fill("#chords", "G C | D7 G")
    page.select_option("#chord_tones", "strict")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/v1/melodies")) as sent:
        page.click("#generate")
    body = sent.value.post_data_json
    assert body["chords"] == "G C | D7 G" and body["chord_tones"] == "strict" and "harmonize" not in body
    page.wait_for_function("() => document.body.dataset.melody", timeout=90_000)
    assert page.get_attribute("body", "data-job") == "succeeded"

    page.wait_for_selector("#notation .abcjs-chord", state="attached")
    assert chord_symbols(page, "#notation .abcjs-chord") == ["G", "C", "D7", "G"]   # above the staff
    assert chord_symbols(page, "#pianoroll text.chord") == ["G", "C", "D7", "G"]    # above the roll
    assert '"G"' in page.text_content("#abc-text") and '"D7"' in page.text_content("#abc-text")
    # strict: a note that starts on a strong beat (4/4: beats 1 and 3) is a tone of the chord there
    notes = page.evaluate("window.tunesmith.current.parsed.notes.map(n => [n.pitch, n.startBeat])")
    strong = {0: "G", 2: "C", 4: "D7", 6: "G"}
    assert any(start in strong for _, start in notes)
    for pitch, start in notes:
        if start in strong:
            assert pitch % 12 in CHORD_PCS[strong[start]], (pitch, start)
    # the roll and the notation are the melody's; the accompaniment is played, and can be muted
    href = page.get_attribute("#downloads a[data-format=midi]", "href")
    with urllib.request.urlopen(service["base"] + href, timeout=10) as response:
        served = mido.MidiFile(file=io.BytesIO(response.read()))
    on = [m for t in served.tracks for m in t if m.type == "note_on" and m.velocity > 0]
    assert page.locator("#pianoroll rect.note").count() == sum(1 for m in on if m.channel == 0)
    assert page.evaluate("window.tunesmith.current.parsed.accompaniment.length") == sum(1 for m in on if m.channel == 1) > 0
    assert page.is_visible("#accompaniment-control") and page.is_visible("#chords-help-result")
    assert page.problems == [], page.problems


def test_the_chords_toggle_estimates_chords_and_the_accompaniment_can_be_muted(service, page, tmp_path):
    page.goto(service["base"] + "/")
    page.fill("#bars", "4")
    page.fill("#seed", "21")
    page.fill("#tempo", "30")
    page.check("#harmonize")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/v1/melodies")) as sent:
        page.click("#generate")
    body = sent.value.post_data_json
    assert body["harmonize"] is True and "chords" not in body and "chord_tones" not in body
    page.wait_for_function("() => document.body.dataset.melody", timeout=90_000)
    assert page.get_attribute("body", "data-job") == "succeeded"

    job = page.evaluate("window.tunesmith.current.entry.id")
    with urllib.request.urlopen(f"{service['base']}/api/v1/jobs/{job}", timeout=10) as response:
        estimated = json.load(response)["result"]["melodies"][0]["chords"]
    assert estimated                                        # the API's estimate, shown as it is
    page.wait_for_selector("#notation .abcjs-chord", state="attached")
    assert chord_symbols(page, "#notation .abcjs-chord") == estimated
    assert chord_symbols(page, "#pianoroll text.chord") == estimated

    control = page.locator("#accompaniment-control")
    assert control.is_visible() and page.is_checked("#accompaniment")
    # the player's accompaniment, read at one moment: its gain is null once a playback has ended
    # (at 30 BPM these 4 bars play for 32 s, but a slow machine may take that long between steps)
    sound = """() => { const p = window.tunesmith.player;
        return { playing: p.state === "playing", muted: p.accompanimentMuted, notes: p.accompaniment.length,
                 gain: p.accompanimentGain ? p.accompanimentGain.gain.value : null }; }"""
    page.click("#play")
    page.wait_for_function("() => document.body.dataset.player === 'playing'"
                           " && window.tunesmith.player.context.state === 'running'")
    heard = page.evaluate(sound)
    assert heard["notes"] > 0 and not heard["muted"] and heard["gain"] != 0
    page.uncheck("#accompaniment")                          # muted while it plays; the melody plays on
    muted = page.evaluate(sound)
    assert muted["muted"] and (muted["gain"] == 0 if muted["playing"] else muted["gain"] is None)
    page.check("#accompaniment")
    back = page.evaluate(sound)
    assert not back["muted"] and back["gain"] != 0
    screenshot(page, "compose-chords.png", tmp_path)
    page.click("#stop")

    # Continue sends the melody alone as the primer: its accompaniment's track is left out
    page.uncheck("#harmonize")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/v1/melodies")) as sent:
        page.click("#continue")
    primer = mido.MidiFile(file=io.BytesIO(base64.b64decode(sent.value.post_data_json["primer"])))
    channels = {m.channel for t in primer.tracks for m in t if m.type == "note_on"}
    assert channels == {0}
    page.wait_for_function(f"() => document.body.dataset.melody !== '{job}'", timeout=90_000)
    assert page.is_hidden("#accompaniment-control")         # no chords asked for: none shown
    assert page.locator("#notation .abcjs-chord").count() == 0
    assert page.problems == [], page.problems


def test_an_unknown_chord_is_named_beside_the_chords_field(service, page):
    page.goto(service["base"] + "/")
    page.fill("#chords", "G | H7")
    assert page.is_visible("#chord_tones")
    page.click("#generate")
    error = page.locator('.field-error[data-for="chords"]')
    error.wait_for(state="visible")
    assert "H7" in error.inner_text()
    assert page.get_attribute("#chords", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "chords"
    assert page.inner_text('.field-error[data-for="bars"]') == ""
    # the browser logs the 400 itself; nothing else went wrong
    assert [p for p in page.problems if "status of 400" not in p] == [], page.problems
