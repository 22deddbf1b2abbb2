"""The model card's tables, made from the committed JSON reports in docs/results/.

    python bench/model_card_tables.py            # prints the tables as markdown

Every figure the tables show is read from a file that `tunesmith evaluate --out docs/results/NAME.json`
(or `bench/ending_keys.py --out ...`) wrote, and each table names the files and the commands stored
in them, so a reader can check any number against its source. Files that are missing are skipped.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
MODELS = (("pull", "shipped, sampled with the tonic pull (3 nats, the default now)"),
          ("shipped", "shipped (network + short-term), no tonic pull"),
          ("stage1", "previous shipped model (17 epochs; one copy gate)"),
          ("previous-default", "first shipped model (no bars-remaining input)"))


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def pct(x) -> str:
    return f"{100 * x:.1f} %"


def prediction_table() -> list[str]:
    rows = ["| model | split | bits/note | pitch bits/note | network alone: bits/note | pitch bits/note | end hidden: bits/note | file |",
            "|---|---|---|---|---|---|---|---|"]
    for stem, label in MODELS:
        for split in ("test", "valid"):
            r = load(f"{stem}-{split}")
            if r is None:
                continue
            alone = r.get("network_only", {})
            hidden = r.get("end_unknown", {})
            rows.append(f"| {label} | {split} | {r['bits_per_note']:.3f} | {r['pitch_bits_per_note']:.3f} | "
                        f"{alone.get('bits_per_note', float('nan')):.3f} | {alone.get('pitch_bits_per_note', float('nan')):.3f} | "
                        f"{hidden['bits_per_note']:.3f} |" if hidden else
                        f"| {label} | {split} | {r['bits_per_note']:.3f} | {r['pitch_bits_per_note']:.3f} | "
                        f"{alone.get('bits_per_note', float('nan')):.3f} | {alone.get('pitch_bits_per_note', float('nan')):.3f} | "
                        f"(no such input) |")
            rows[-1] += f" `{stem}-{split}.json` |"
    return rows


def endings_table() -> list[str]:
    rows = ["| tunes | melodies | end on own tonic | final note on a strong beat | final note longer than a beat | "
            "final note, mean beats | degenerate (before the gate) |", "|---|---|---|---|---|---|---|"]
    ref = None
    for stem, label in MODELS:
        r = load(f"{stem}-test")
        if r is None or "samples" not in r:
            continue
        s, e = r["samples"], r["samples"]["endings"]
        rows.append(f"| {label}, generated | {s['melodies']} | {pct(e['tonic_share'])} | "
                    f"{pct(e['final_on_strong_beat_share'])} | {pct(e['final_longer_than_beat_share'])} | "
                    f"{e['final_length_beats']:.2f} | {pct(s.get('redrawn_share', float('nan')))} |")
        ref = ref or s
    if ref is not None:
        e = ref["reference_endings"]
        rows.append(f"| the Essen test tunes | {e['tunes']} | {pct(e['tonic_share'])} | "
                    f"{pct(e['final_on_strong_beat_share'])} | {pct(e['final_longer_than_beat_share'])} | "
                    f"{e['final_length_beats']:.2f} | {pct(ref['reference_degenerate_share'])} |")
    return rows


def keys_table() -> list[str]:
    rows = ["| model | cadence | on the requested tonic | on a strong beat | final note longer than a beat |",
            "|---|---|---|---|---|"]
    for stem, label in MODELS:
        r = load(f"{stem}-ending-keys")
        if r is None:
            continue
        n = r["melodies_per_setting"]
        for cadence in ("none_without_pull", "none", "tonic"):
            if cadence not in r:
                continue
            c = r[cadence]
            rows.append(f"| {label} | {c.get('params', cadence)} | {c['on_requested_tonic']} of {n} | {c['final_on_strong_beat']} of {n} "
                        f"| {c['final_longer_than_beat']} of {n} |")
    return rows


def folds_table() -> list[str]:
    rows = ["| protocol | model | folds | tunes | notes | pitch bits/note | bits/note (all tokens) | file |",
            "|---|---|---|---|---|---|---|---|"]
    for stem, label in (("kinder-cv-equal-default", "equal data, the default recipe (batch 64, 30 epochs)"),
                        ("kinder-cv-equal-b8", "equal data, batch 8, 60 epochs, transposition -5..+6"),
                        ("kinder-cv-equal-b8-lrp4", "equal data, the same with --lr-patience 4"),
                        ("kinder-cv-equal-b8-lrp4-e100", "equal data, the same for 100 epochs, patience 10")):
        r = load(stem)
        if r is None:
            continue
        for part, name in (("mixture", "network + short-term"), ("network_only", "network alone")):
            if part in r:
                p = r[part]
                rows.append(f"| {label} | {name} | {r['folds']} | {p['tunes']} | {p['notes']} | "
                            f"{p['pitch_bits_per_note']:.3f} | {p['bits_per_note']:.3f} | `{stem}.json` |")
    rows.append("| IDyOM (Pearce 2005), LTM+STM, pitch only | | 10 | 213 | 8,393 | 2.106 | | published |")
    return rows


def main() -> int:
    for title, table in (("Prediction", prediction_table()), ("Endings (400 samples, test split)", endings_table()),
                         ("Requested keys (bench/ending_keys.py)", keys_table()),
                         ("Cross-validation on kinder", folds_table())):
        print(f"### {title}\n")
        print("\n".join(table))
        print()
    for name in sorted(p.stem for p in RESULTS.glob("*.json")):
        command = (load(name) or {}).get("command")
        if command:
            print(f"- `{name}.json`: `{command}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
