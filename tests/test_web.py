"""service/web.py and the composing page's Harmony fields without a browser: the page Flask renders
(the Chords field's suggestions are progressions the API takes, its help names the chord vocabulary,
Chord tones offers the API's choices), and, where node is installed, the page's own modules run as
they are: the request fields the Harmony fields make (harmony.js) and the chord symbols written into
the notation's ABC (notation.js). tests/test_browser.py drives the same page in Chromium."""
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from model.generation import params
from model.representation.chords import parse_progression, vocabulary_text
from service.web import CHORD_EXAMPLES

JS = Path(__file__).resolve().parents[1] / "service" / "static" / "js"
NODE = shutil.which("node")


class Elements(HTMLParser):
    """Every start tag as (tag, attributes), and the text of each element with an id."""
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.open = [], {}, []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("input", "option", "br"):
            self.open.append(dict(attrs).get("id"))

    def handle_endtag(self, tag):
        if tag not in ("input", "option", "br") and self.open:
            self.open.pop()

    def handle_data(self, data):
        for element in filter(None, self.open):
            self.text[element] = self.text.get(element, "") + data


@pytest.fixture
def compose_page(app):
    response = app.test_client().get("/")
    assert response.status_code == 200
    page = Elements()
    page.feed(response.get_data(as_text=True))
    return page


def test_the_chords_field_suggests_progressions_the_api_takes_and_names_the_vocabulary(compose_page):
    options = [a["value"] for t, a in compose_page.tags if t == "option" and "value" in a]
    suggested = [v for v in options if "|" in v]
    assert suggested == list(CHORD_EXAMPLES) and "G C | D7 G" in suggested
    for progression in suggested:
        assert parse_progression(progression)           # no ValueError: the API would take each one
    chords = next(a for t, a in compose_page.tags if a.get("id") == "chords")
    assert chords["list"] == "chord-choices" and int(chords["maxlength"]) == params.MAX_CHORDS_TEXT
    help_text = " ".join(compose_page.text["chords-help"].split())
    assert "separated by |" in help_text and "split it evenly" in help_text
    assert vocabulary_text() in help_text


def test_chord_tones_offers_the_apis_choices_and_waits_for_chords(compose_page):
    select = [i for i, (t, a) in enumerate(compose_page.tags) if a.get("id") == "chord_tones"][0]
    values = [a["value"] for t, a in compose_page.tags[select + 1:select + 1 + len(params.CHORD_TONES)]]
    assert tuple(values) == params.CHORD_TONES
    field = next(a for t, a in compose_page.tags if a.get("id") == "chord_tones-field")
    assert "hidden" in field                            # shown once there are chords (harmony.js)
    harmonize = next(a for t, a in compose_page.tags if a.get("id") == "harmonize")
    assert harmonize["type"] == "checkbox" and "checked" not in harmonize


def run_module(script: str):
    """Runs an ES module script with node (from the js folder) and returns what it printed, as JSON."""
    done = subprocess.run([NODE, "--input-type=module", "-e", script], cwd=JS, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(NODE is None, reason="needs node to run the page's modules")
def test_the_harmony_fields_make_the_request_fields():
    cases = [{}, {"chords": "  G C | D7 G ", "chordTones": "strict"}, {"chords": "", "chordTones": "strict"},
             {"harmonize": True}, {"chords": "Am", "chordTones": "soft", "harmonize": True}]
    bodies = run_module(f"""import {{ harmonyFields }} from "./harmony.js";
        console.log(JSON.stringify({json.dumps(cases)}.map(harmonyFields)));""")
    assert bodies == [{}, {"chords": "G C | D7 G", "chord_tones": "strict"}, {}, {"harmonize": True},
                      {"chords": "Am", "chord_tones": "soft", "harmonize": True}]


@pytest.mark.skipif(NODE is None, reason="needs node to run the page's modules")
def test_chord_symbols_go_on_the_note_or_rest_where_each_chord_starts():
    # G held three beats across the change to C: split and tied there; bar 2 starts with a rest
    notes = [{"pitch": 67, "startBeat": 0, "endBeat": 3}, {"pitch": 71, "startBeat": 3, "endBeat": 4},
             {"pitch": 74, "startBeat": 5, "endBeat": 8}]
    chords = [{"chord": c, "startBeat": b, "endBeat": b + 2} for c, b in (("G", 0), ("C", 2), ("D7", 4), ("G", 6))]
    out = run_module(f"""import {{ melodyToAbc }} from "./notation.js";
        console.log(JSON.stringify(melodyToAbc({json.dumps(notes)}, {{ key: "G", chords: {json.dumps(chords)} }})));""")
    body = out["abc"].split("K:G\n")[1]
    assert re.findall(r'"([^"]+)"', body) == ["G", "C", "D7", "G"]
    assert body.split("|")[0].split() == ['"G"G8-', '"C"G4', "B4"]
    assert body.split("|")[1].split()[0] == '"D7"z4'
    assert out["written"] == [0, 0, 1, 2, 2]           # the tied pieces of one note keep its index
    plain = run_module(f"""import {{ melodyToAbc }} from "./notation.js";
        console.log(JSON.stringify(melodyToAbc({json.dumps(notes)}, {{ key: "G" }})));""")
    assert '"' not in plain["abc"] and plain["written"] == [0, 1, 2]
