"""The model card's tables from `tunesmith evaluate` outputs.

Usage: python bench/quality_table.py runs/eval/*.json
Each JSON is what `tunesmith evaluate --model runs/<name>.pt --data music21:essenFolksong --split test`
printed; the training settings and time come from the checkpoint itself.
"""
import json
import sys
from pathlib import Path

import torch


def training_summary(model_path: str) -> dict:
    ckpt = torch.load(model_path, map_location="cpu", weights_only=False)
    cfg, history = ckpt["train_config"], ckpt["history"]
    return {"cell": cfg["cell"], "size": f"{cfg['layers']}x{cfg['hidden_size']}",
            "position": "yes" if cfg["position_inputs"] else "no",
            "transpose": "off" if tuple(cfg["transpose"]) == (0, 0) else f"{cfg['transpose'][0]}..+{cfg['transpose'][1]}",
            "dropout": cfg["dropout"], "epochs": len(history),
            "minutes": sum(h.get("seconds", 0) for h in history) / 60,
            "best_valid": ckpt["metrics"]["valid_loss"]}


def main(paths: list[str]) -> None:
    rows, ngram = [], None
    for path in paths:
        report = json.loads(Path(path).read_text())
        rows.append((Path(path).stem, report, training_summary(report["model"])))
        ngram = ngram or report.get("ngram")
    print("| run | cell | size | position input | transposition | dropout | epochs | train min | "
          "valid nats/token | test nats/token | bits/note | pitch bits/note | degenerate |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r, t in rows:
        degenerate = r.get("samples", {}).get("degenerate_share")
        print(f"| {name} | {t['cell']} | {t['size']} | {t['position']} | {t['transpose']} | {t['dropout']} | "
              f"{t['epochs']} | {t['minutes']:.0f} | {t['best_valid']:.4f} | {r['nats_per_token']:.4f} | "
              f"{r['bits_per_note']:.3f} | {r['pitch_bits_per_note']:.3f} | "
              f"{'-' if degenerate is None else f'{degenerate:.1%}'} |")
    if ngram:
        print(f"| Kneser-Ney {ngram['order']}-gram | | | | | | | | | {ngram['nats_per_token']:.4f} | "
              f"{ngram['bits_per_note']:.3f} | {ngram['pitch_bits_per_note']:.3f} | |")


if __name__ == "__main__":
    main(sys.argv[1:])
