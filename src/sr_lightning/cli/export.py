"""``sr-export``: a trained EDSR/MDSR as ONNX, TorchScript or a ``torch.export`` program (see
:mod:`sr_lightning.models.export`)::

    sr-export --model edsr_baseline --scale 2 --weights edsr_x2.pt --format onnx --out edsr_x2.onnx
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sr_lightning.models.catalogue import PRESETS as CATALOGUE
from sr_lightning.models.checkpoint import find_checkpoint, load_network, load_weights
from sr_lightning.models.export import (
    FORMATS,
    PRESETS,
    SUFFIXES,
    VERIFY_ATOL,
    build_model,
    export_format,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-export",
        description="A trained EDSR/MDSR as ONNX, TorchScript or a torch.export program.",
    )
    p.add_argument("--model", help=f"preset: {', '.join(PRESETS)} (default: from --weights)")
    p.add_argument("--scale", type=int, help="upscaling factor (default: the model's only one)")
    p.add_argument(
        "--weights",
        help="Lightning .ckpt or authors' .pt, or a glob matching one (default: random init)",
    )
    p.add_argument("--format", default="onnx", help=f"{', '.join(FORMATS)} (default: onnx)")
    p.add_argument("--out", help="output file (default: <model>_x<scale> + format suffix)")
    p.add_argument("--n-resblocks", type=int, help="override the preset's depth")
    p.add_argument("--n-feats", type=int, help="override the preset's width")
    p.add_argument(
        "--res-scale",
        type=float,
        help="residual scaling: the preset's, or of weights without a record",
    )
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="MDSR scales")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 11)")
    p.add_argument("--static", action="store_true", help="fixed 2x3x32x32 input shape")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, or prints the error and returns 1."""
    args = build_parser().parse_args(argv)
    try:
        if args.format not in FORMATS:
            raise ValueError(f"unknown --format {args.format!r}; choose one of {list(FORMATS)}")
        if args.model is None and args.weights is None:
            raise ValueError(
                "give --model (a preset), --weights (read the network off it), or both"
            )
        weights = find_checkpoint(args.weights) if args.weights else None
        if args.model is None:
            model, _ = load_network(weights, res_scale=args.res_scale)
        else:
            if args.model not in PRESETS:
                raise ValueError(f"unknown --model {args.model!r}; choose one of {PRESETS}")
            if args.scale is None and CATALOGUE[args.model].arch == "EDSR":
                raise ValueError(f"--model {args.model} needs --scale")
            model = build_model(
                args.model, args.scale, args.n_resblocks, args.n_feats, args.res_scale, args.scales
            )
            if weights:
                load_weights(model, weights)
        scales = list(model.scales)
        scale = args.scale if args.scale is not None else scales[0] if len(scales) == 1 else None
        if scale not in scales:
            raise ValueError(f"--scale {args.scale}: this model supports x{scales}")
        name = args.model or type(model).__name__.lower()
        out = Path(args.out or f"{name}_x{scale}{SUFFIXES[args.format]}")
        dynamic = not args.static
        model = model.cpu()
        diff = export_format(
            model, scale, args.format, out, args.opset, dynamic, not args.no_verify
        )
        shapes = "dynamic batch/height/width" if dynamic else "static 2x3x32x32 input"
        check = f"; onnxruntime max abs diff {diff:.2e}" if diff is not None else ""
        print(f"{type(model).__name__} x{scale} -> {out} ({args.format}, {shapes}{check})")
        if diff is not None and diff > VERIFY_ATOL:
            raise ValueError(f"onnxruntime output differs from PyTorch by {diff} > {VERIFY_ATOL}")
        return 0
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
