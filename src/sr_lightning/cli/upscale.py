"""Upscale images: ``sr-upscale photo.png folder/ 'shots/*.png' --weights W --out DIR``.

``--weights`` is a Lightning checkpoint of ours (the network is rebuilt from its record) or an
authors' ``.pt`` (read off the tensor shapes; ``--res-scale`` where the preset's is not right),
a path or a glob that matches one file (``'<run>/checkpoints/best-*.ckpt'``).
Outputs are PNGs named ``<stem>_x<s>.png``, quantized exactly as the evaluation scores them;
inputs are never overwritten. A file that cannot be read is reported and skipped: every other
file is still written, and the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from sr_lightning.core.inference import PRECISIONS, default_device, super_resolve
from sr_lightning.data.io import (
    IMAGE_SUFFIXES,
    ImageError,
    list_images,
    load_image,
    save_image,
    to_rgb,
)
from sr_lightning.models.checkpoint import find_checkpoint, load_network


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images) and glob patterns, in order, without duplicates."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            paths += list_images(p)
        elif p.is_file():
            paths.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(p)))
            matches = [m for m in matches if m.suffix.lower() in IMAGE_SUFFIXES]
            if not matches:
                raise FileNotFoundError(f"no image matches {item!r}")
            paths += matches
    return list(dict.fromkeys(paths))


def upscale_image(model: torch.nn.Module, lr: torch.Tensor, scale: int, **options) -> torch.Tensor:
    """uint8 (3, h, w) LR -> uint8 (3, h*s, w*s) SR, exactly as ``eval`` scores it; ``options``
    are :func:`~sr_lightning.inference.super_resolve`'s (ensemble, tile, overlap, precision).
    The output is assembled tile by tile in a uint8 buffer: memory is bounded by the tile size,
    not the image size."""
    device = next(model.parameters()).device
    x = lr[None].to(device, torch.float32) * (model.rgb_range / 255.0)
    out = torch.empty(1, 3, lr.shape[-2] * scale, lr.shape[-1] * scale, dtype=torch.uint8)
    return super_resolve(model, x, scale, out=out.to(device), **options)[0].cpu()


def output_paths(sources: list[Path], out_dir: Path, scale: int) -> list[Path]:
    """``<out_dir>/<stem>_x<s>.png`` for each source; refused if one would replace an input."""
    dsts = [out_dir / f"{src.stem}_x{scale}.png" for src in sources]
    inputs = {src.resolve() for src in sources}
    clash = [d for d in dsts if d.resolve() in inputs]
    if clash:
        raise ValueError(f"refusing to overwrite input image(s) {clash}: choose another --out")
    return dsts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sr-upscale", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument(
        "--weights", required=True, help="Lightning .ckpt or authors' .pt (or a glob matching one)"
    )
    p.add_argument("--out", default="outputs/upscaled", help="output folder")
    p.add_argument("--scale", type=int, help="scale (required for a multi-scale MDSR)")
    p.add_argument("--self-ensemble", action="store_true", help="x8 geometric self-ensemble")
    p.add_argument("--tile", type=int, default=0, help="LR tile side for bounded memory (0: off)")
    p.add_argument("--tile-overlap", type=int, help="LR context per tile (default: exact)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    p.add_argument(
        "--res-scale", type=float, help="residual scaling of weights without a record (.pt)"
    )
    p.add_argument("--device", default=default_device())
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        weights = find_checkpoint(args.weights)
        model, _ = load_network(weights, res_scale=args.res_scale)
        scales = list(model.scales)
        scale = args.scale or (scales[0] if len(scales) == 1 else None)
        if scale not in scales:
            raise ValueError(f"--scale {args.scale}: {weights} supports x{scales}")
        model = model.to(args.device).eval()
        out_dir = Path(args.out)
        paths = expand_inputs(args.inputs)
        dsts = output_paths(paths, out_dir, scale)
    except (FileNotFoundError, ValueError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from tqdm import tqdm

    failed = []
    jobs = list(zip(paths, dsts, strict=True))
    for src, dst in tqdm(jobs, desc="upscaling", unit="img", disable=len(jobs) < 2):
        try:
            sr = upscale_image(
                model,
                to_rgb(load_image(src)),
                scale,
                ensemble=args.self_ensemble,
                tile=args.tile,
                overlap=args.tile_overlap,
                precision=args.precision,
            )
            save_image(sr, dst)
        except (OSError, ValueError, ImageError) as e:  # this file only: the others go on
            failed.append(src)
            message = f"error: {e}" if str(src) in str(e) else f"error: {src}: {e}"
            tqdm.write(message, file=sys.stderr)
    done = len(jobs) - len(failed)
    print(f"{done} image(s) written to {out_dir}, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
