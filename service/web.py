"""The web pages: the composing page at `/` and the training page at `/train`.

Both pages are static HTML plus a little JavaScript that talks to the JSON API under
`/api/v1` (the browser does all the work; these views only render templates). Every
script and style is served from this package: our own code from `static/`, and
vendored npm builds under `static/vendor/` (see `frontend/`), so the pages work with
no internet.

The pages' limits and defaults come from where the API's come from (model/generation/params.py and
TrainConfig, through service/schemas.py), passed in the template context.

Register it in the app factory:

    from service.web import bp
    app.register_blueprint(bp)
"""
from flask import Blueprint, render_template

from model.generation import params
from model.representation.chords import vocabulary_text
from service.schemas import GENERATION_DEFAULTS, SCALES, TrainingRequest, field_bounds

# The Chords field's suggestions (tests/test_web.py parses each with the API's own parser).
CHORD_EXAMPLES = ("G C | D7 G", "C | F | G7 | C", "C Am | F G7", "D | G | A7 | D", "Am | Dm | E7 | Am",
                  "G | Em | C | D7", "F | Bb | C7 | F")

# Static files live under /assets, not /static, so they never collide with the app's
# own static route whatever folder the app factory gives it.
bp = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)


@bp.get("/")
def compose():
    """The composing page: parameters, generate, listen, see and download melodies."""
    return render_template("compose.html", scales=SCALES, limits=params, defaults=GENERATION_DEFAULTS,
                           chord_vocabulary=vocabulary_text(), chord_examples=CHORD_EXAMPLES)


@bp.get("/train")
def train():
    """The training page: start a training job, watch its loss curves, make it the default."""
    defaults = {name: field.get_default(call_default_factory=True)
                for name, field in TrainingRequest.model_fields.items()}
    return render_template("train.html", defaults=defaults, bounds=field_bounds(TrainingRequest))
