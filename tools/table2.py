"""Table 2 analogue without training: B0–B7 built with timm at their own resolutions vs the paper.

    python -m tools.table2 --out reports/table2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from scaling import complexity, models

# official efficientnet_params (width, depth, resolution) and paper Table 2 (params, FLOPs as multiply-adds)
EFFICIENTNETS = {
    "efficientnet_b0": (1.0, 1.0, 224, 5.3e6, 0.39e9),
    "efficientnet_b1": (1.0, 1.1, 240, 7.8e6, 0.70e9),
    "efficientnet_b2": (1.1, 1.2, 260, 9.2e6, 1.0e9),
    "efficientnet_b3": (1.2, 1.4, 300, 12e6, 1.8e9),
    "efficientnet_b4": (1.4, 1.8, 380, 19e6, 4.2e9),
    "efficientnet_b5": (1.6, 2.2, 456, 30e6, 9.9e9),
    "efficientnet_b6": (1.8, 2.6, 528, 43e6, 19e9),
    "efficientnet_b7": (2.0, 3.1, 600, 66e6, 37e9),
}


def table() -> pd.DataFrame:
    """One row per variant: coefficients, stage sizes, params, FLOPs, activations, paper values."""
    rows = []
    for name, (w, d, px, p_params, p_flops) in EFFICIENTNETS.items():
        built = models.build_model("efficientnet_b0", depth=d, width=w)
        cx = complexity.count(built.model, px)
        rows.append(dict(model=name, width=w, depth=d, resolution=px, stage_depths=built.stage_depths,
                         stage_widths=built.stage_widths, params=cx.params, flops=cx.flops,
                         activations=cx.activations, paper_params=p_params, paper_flops=p_flops))
    return pd.DataFrame(rows)


def main() -> None:
    """Build, count, write table2.{csv,md,png,pdf}."""
    from analysis.plots import table2 as draw

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/table2")
    args = ap.parse_args()
    for path in draw(table(), Path(args.out)):
        print(f"wrote {path}")
    print(Path(args.out, "table2.md").read_text())


if __name__ == "__main__":
    main()
