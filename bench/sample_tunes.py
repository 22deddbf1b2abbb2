"""A small corpus of another tradition, as an operator would bring one: N tunes of a music21 ABC
collection drawn by seed, written one tune per .abc file into a folder (a folder is a corpus spec).

    python bench/sample_tunes.py --data music21:oneills1850 --tunes 200 --seed 0 --out runs/oneills-200

The draw is over the collection's ABC tunes (the `X:` sections, file header fields copied in, as
model/representation/corpora.py splits them; a tune number (`X:`) that two files hold counts once,
the first file's), ordered by a hash of (seed, tune id); a tune that the
parser would refuse (free meter, odd bars) is still drawn and then counted as a failure when the
folder is parsed, so `tunesmith corpus info --data <folder>` reports the tunes and notes used.
Prints the drawn tune ids as JSON.
"""
import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.representation.corpora import source_files, work_items  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="music21:oneills1850")
    p.add_argument("--tunes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder to write (must not hold .abc files yet)")
    args = p.parse_args(argv)
    root, files = source_files(args.data)
    items, seen = [], set()
    for item in work_items(root, files):  # some tunes are in two files (oneills1850: 1556-1576 and 1556-1624 ...)
        number = re.match(r"X:\s*(\S*)", item[2]) if item[1] == "abc" else None
        if number and number.group(1) not in seen:
            seen.add(number.group(1))
            items.append(item)
    if len(items) < args.tunes:
        p.error(f"--tunes must be at most the {len(items)} ABC tunes of {args.data}, got {args.tunes}")
    drawn = sorted(items, key=lambda it: hashlib.sha256(f"{args.seed}:{it[0]}".encode()).digest())[:args.tunes]
    out = Path(args.out)
    if out.is_dir() and any(out.glob("*.abc")):
        p.error(f"--out {out} already holds .abc files")
    out.mkdir(parents=True, exist_ok=True)
    for n, (tune_id, _, text) in enumerate(drawn):
        (out / f"{n:04d}.abc").write_text(text)
    print(json.dumps({"data": args.data, "seed": args.seed, "tunes": [t for t, _, _ in drawn]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
