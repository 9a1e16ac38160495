"""The cost-matched single-dimension models of one compound point, as JSON (scaling/matching.py).

    python -m tools.equal_cost --alpha 1.2 --beta 1.1 --gamma 1.15 --phi 2 [--native-size 28]
"""

from __future__ import annotations

import argparse
import json

from scaling import errors
from scaling.coefficients import COST_TOLERANCE, ScalingError, compound
from scaling.matching import match_compound, model_flops_counter, upscaled


def main(argv: list[str] | None = None) -> None:
    """Command line: the cost-matched single-dimension models of one compound point, as JSON."""
    ap = argparse.ArgumentParser(description="Single-dimension models whose counted FLOPs match a compound model.")
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--base-depth", type=float, default=0.5)
    ap.add_argument("--base-width", type=float, default=0.5)
    ap.add_argument("--base-resolution", type=int, default=20, help="r0 in px")
    ap.add_argument("--resolution-multiple", type=int, default=1)
    ap.add_argument("--in-chans", type=int, default=1)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--no-small-input", action="store_true", help="keep the stride-2 stem")
    ap.add_argument("--alpha", type=float, default=1.2)
    ap.add_argument("--beta", type=float, default=1.1)
    ap.add_argument("--gamma", type=float, default=1.15)
    ap.add_argument("--phi", type=float, default=2.0)
    ap.add_argument("--tolerance", type=float, default=COST_TOLERANCE)
    ap.add_argument("--native-size", type=int, default=None, help="data's native size in px, to flag upscaling")
    args = ap.parse_args(argv)
    try:
        counter = model_flops_counter(args.model, args.base_depth, args.base_width, args.base_resolution,
                                      args.resolution_multiple, args.in_chans, args.num_classes,
                                      not args.no_small_input)
        target, found = match_compound(counter, args.alpha, args.beta, args.gamma, args.phi, args.tolerance,
                                       args.base_resolution, args.resolution_multiple)
    except ScalingError as err:
        errors.fail(err)
    m = compound(args.alpha, args.beta, args.gamma, args.phi)
    out = {"target": {"depth": m.depth, "width": m.width, "resolution": m.resolution,
                      "px": counter.px(m.resolution), "flops": target},
           "matches": {k: v.as_dict() for k, v in found.items()}}
    if args.native_size:
        for entry in (out["target"], *out["matches"].values()):
            entry["upscaled"] = upscaled(entry["px"] or counter.px(entry["resolution"]), args.native_size)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
