"""Styles: the tradition a training tune comes from, read from the collection it was parsed from.

A tune's style is the network's style input (``model.network.conditions``), so one model trained on
several traditions writes in the one a request names. The tag is the collection, never the notes:

| style | collections (music21's corpus) |
|---|---|
| ``german`` | Essen's German-language collections: every ``essenFolksong`` file but ``han1``, ``han2`` and ``irl`` |
| ``chinese`` | Essen's ``han1``, ``han2`` (1,224 Chinese folk songs) |
| ``irish`` | Irish and Scottish dance tunes and airs: ``oneills1850``, ``ryansMammoth``, ``airdsAirs`` and Essen's ``irl`` |

A tune from anywhere else (a user's folder) has no style: the network reads it as "unknown", which
is also what a request without ``style`` (or with ``"any"``) asks for. Nothing here imports torch.
"""
from __future__ import annotations

STYLES = ("german", "chinese", "irish")          # style ids 0..2; len(STYLES) is "unknown"
ANY = "any"                                      # a request's "no style": the network's unknown
STYLE_DESCRIPTIONS = {
    "german": "German folk songs (Essen)",
    "chinese": "Chinese folk songs (Essen han1, han2)",
    "irish": "Irish and Scottish dance tunes and airs (O'Neill, Ryan, Aird; Essen irl)",
}
IRISH_COLLECTIONS = ("oneills1850", "ryansMammoth", "airdsAirs")
STYLE_CORPORA = ("music21:essenFolksong", *(f"music21:{name}" for name in IRISH_COLLECTIONS))


def style_of(tune_id: str) -> str | None:
    """The style of a tune from its id (its path in music21's corpus + ``#index``), None when its
    collection carries none."""
    path = tune_id.split("#", 1)[0].replace("\\", "/")
    parts = path.split("/")
    collection = parts[0]
    if collection in IRISH_COLLECTIONS:
        return "irish"
    if collection == "essenFolksong" and len(parts) > 1:
        name = parts[-1].rsplit(".", 1)[0]
        if name in ("han1", "han2"):
            return "chinese"
        if name == "irl":
            return "irish"
        return "german"
    return None


def style_id(name: str | None, styles=STYLES) -> int:
    """The id of a style among ``styles`` (a model's list); None or "any": unknown (len(styles))."""
    if name is None or name == ANY:
        return len(styles)
    if name not in styles:
        allowed = ", ".join((*styles, ANY))
        raise ValueError(f"style must be one of {allowed}, got {name!r}")
    return styles.index(name)
