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
from service.schemas import GENERATION_DEFAULTS, SCALES, TrainingRequest, field_bounds

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
    return render_template("compose.html", scales=SCALES, limits=params, defaults=GENERATION_DEFAULTS)


@bp.get("/train")
def train():
    """The training page: start a training job, watch its loss curves, make it the default."""
    defaults = {name: field.get_default(call_default_factory=True)
                for name, field in TrainingRequest.model_fields.items()}
    return render_template("train.html", defaults=defaults, bounds=field_bounds(TrainingRequest))
