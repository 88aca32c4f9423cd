"""Upscale images: ``sr-upscale photo.png folder/ 'shots/*.png' --weights W --out DIR``.

``--weights`` is a Lightning checkpoint of ours or an authors' ``.pt``; the network (EDSR or
MDSR, its depth, width and scales) is read off the tensor shapes. Outputs are PNGs named
``<stem>_x<s>.png``; inputs are never overwritten.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from .checkpoint import load_state_dict, model_from_state_dict
from .data.io import IMAGE_SUFFIXES, ImageError, list_images, load_image, save_image, to_rgb
from .inference import self_ensemble, tiled_forward
from .lit_module import receptive_radius
from .metrics import quantize

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


@torch.inference_mode()
def upscale_image(
    model: torch.nn.Module,
    lr: torch.Tensor,
    scale: int,
    *,
    ensemble: bool = False,
    tile: int = 0,
    overlap: int | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """uint8 (3, h, w) LR on the model's device -> uint8 (3, h*s, w*s) SR, as ``eval`` scores it.

    With ``tile`` the output is assembled tile by tile in a uint8 buffer: memory is bounded by
    the tile size, not the image size.
    """
    device = next(model.parameters()).device
    dtype = DTYPES[precision]
    overlap = receptive_radius(model) if overlap is None else overlap
    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with amp:
            y = self_ensemble(lambda t: model(t, scale), x) if ensemble else model(x, scale)
        return quantize(y.float())

    x = lr[None].to(device, torch.float32)
    out = torch.empty(1, 3, lr.shape[-2] * scale, lr.shape[-1] * scale, dtype=torch.uint8)
    return tiled_forward(forward, x, scale, tile, overlap, out=out.to(device))[0].cpu()


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
    p.add_argument("--weights", required=True, help="Lightning .ckpt or authors' .pt")
    p.add_argument("--out", default="outputs/upscaled", help="output folder")
    p.add_argument("--scale", type=int, help="scale (required for a multi-scale MDSR)")
    p.add_argument("--self-ensemble", action="store_true", help="x8 geometric self-ensemble")
    p.add_argument("--tile", type=int, default=0, help="LR tile side for bounded memory (0: off)")
    p.add_argument("--tile-overlap", type=int, help="LR context per tile (default: exact)")
    p.add_argument("--precision", choices=list(DTYPES), default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = model_from_state_dict(load_state_dict(args.weights))
        scales = list(model.scales)
        scale = args.scale or (scales[0] if len(scales) == 1 else None)
        if scale not in scales:
            raise ValueError(f"--scale {args.scale}: {args.weights} supports x{scales}")
        model = model.to(args.device).eval()
        out_dir = Path(args.out)
        paths = expand_inputs(args.inputs)
        dsts = output_paths(paths, out_dir, scale)
        from tqdm import tqdm

        jobs = list(zip(paths, dsts, strict=True))
        for src, dst in tqdm(jobs, desc="upscaling", unit="img", disable=len(jobs) < 2):
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
        print(f"{len(paths)} image(s) written to {out_dir}")
        return 0
    except (FileNotFoundError, ValueError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
