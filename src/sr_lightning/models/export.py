"""Export a trained EDSR/MDSR for deployment: ONNX, TorchScript or a ``torch.export`` program.

Every format holds one fixed scale: one float32 input ``lr`` (N, 3, H, W) RGB in [0, 255] and
one output ``sr`` (N, 3, H*s, W*s), with batch, height and width dynamic by default::

    python -m sr_lightning.export --model edsr_baseline --scale 2 --weights edsr_x2.pt \\
        --format onnx --out edsr_x2.onnx

``--model`` picks a preset of the model catalogue (``--n-resblocks``/``--n-feats``/``--res-scale``
override it); left out, the network is rebuilt from ``--weights`` (its record, or its shapes).
ONNX needs the ``export`` extra (``onnx``, ``onnxruntime``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from sr_lightning.models.catalogue import PRESETS as CATALOGUE
from sr_lightning.models.catalogue import build_net

FORMATS = ("onnx", "torchscript", "exported")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported": ".pt2"}
PRESETS = [name for name, p in CATALOGUE.items() if p.arch != "Bicubic"]  # trainable ones
INPUT, OUTPUT = "lr", "sr"
MIN_OPSET = 11  # PixelShuffle -> DepthToSpace
VERIFY_ATOL = 1e-3  # absolute, on outputs in [0, 255]
Exporter = Literal["auto", "classic", "dynamo"]


class SingleScale(nn.Module):
    """``model`` with ``scale`` baked in: ``forward(lr) = model(lr, scale)``, one input, one output.

    Raises ``ValueError`` when ``model`` (EDSR or MDSR: its ``scales``) does not support ``scale``.
    """

    def __init__(self, model: nn.Module, scale: int):
        super().__init__()
        scales = tuple(getattr(model, "scales", ()))
        if scales and int(scale) not in scales:
            raise ValueError(f"x{scale} is not a scale of this {type(model).__name__}: {scales}")
        self.model = model
        self.scale = int(scale)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.model(lr, self.scale)


@contextmanager
def _inference(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode without autograd and tracer chatter; its mode is restored after.

    The tracer warns on the models' (N, 3, H, W) input check, which is static for a 3-channel
    input; those warnings are silenced.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            yield module
    finally:
        for m, training in modes:
            m.training = training


def example_input(model: nn.Module, batch: int = 2, size: int = 32) -> torch.Tensor:
    """A deterministic (batch, 3, size, size) input in [0, 255] on ``model``'s device.

    Batch 2, not 1: ``torch.export`` would specialize a size-1 dimension to a constant.
    """
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(batch, 3, size, size, generator=gen) * 255).to(_device(model))


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _prepare(path: str | Path) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.float().cpu() - b.float().cpu()).abs().max())


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs `{module}`: pip install 'sr-lightning[export]' "
            "(onnx and onnxruntime)"
        ) from e


def _export_onnx_with(
    dynamo: bool, net: nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic: bool
) -> None:
    """``torch.onnx.export`` by the classic (TorchScript-based) or the dynamo exporter: the
    same names, opset and dynamic batch/height/width, each exporter's way of saying so."""
    if dynamo:
        dyn = torch.export.Dim.DYNAMIC
        shapes = {INPUT: {0: dyn, 2: dyn, 3: dyn}} if dynamic else None
        options = {"dynamic_shapes": shapes, "external_data": False}
    else:
        axes = {
            INPUT: {0: "batch", 2: "height", 3: "width"},
            OUTPUT: {0: "batch", 2: "sr_height", 3: "sr_width"},
        }
        options = {"dynamic_axes": axes if dynamic else None, "do_constant_folding": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the classic exporter, on purpose
        torch.onnx.export(
            net,
            (x,),
            str(path),
            dynamo=dynamo,
            opset_version=opset,
            input_names=[INPUT],
            output_names=[OUTPUT],
            **options,
        )


def export_onnx(
    model: nn.Module,
    scale: int,
    path: str | Path,
    opset: int = 17,
    dynamic: bool = True,
    exporter: Exporter = "auto",
) -> Path:
    """Write ``model`` at ``scale`` as ONNX (input ``lr``, output ``sr``); return the path.

    ``dynamic``: batch, height and width are symbolic (otherwise fixed to a 2x3x32x32 input).
    ``exporter``: ``classic`` (TorchScript-based, ``dynamo=False``), ``dynamo`` (``torch.export``
    based; needs ``onnxscript``) or ``auto`` (classic, then dynamo if classic is unavailable or
    fails). The file is checked with ``onnx.checker`` and records ``scale``, ``model`` and
    ``exporter`` in its metadata.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} < {MIN_OPSET}: PixelShuffle needs DepthToSpace")
    if exporter not in ("auto", "classic", "dynamo"):
        raise ValueError(f"exporter={exporter!r}: use 'auto', 'classic' or 'dynamo'")
    _require("onnx")
    import onnx

    path = _prepare(path)
    net = SingleScale(model, scale)
    x = example_input(model)
    used = exporter
    with _inference(net):
        if exporter == "dynamo":
            _export_onnx_with(True, net, x, path, opset, dynamic)
        else:
            try:
                _export_onnx_with(False, net, x, path, opset, dynamic)
                used = "classic"
            except Exception as classic_error:
                if exporter == "classic":
                    raise
                warnings.warn(
                    f"classic ONNX exporter failed ({classic_error}); trying the dynamo one",
                    stacklevel=2,
                )
                try:
                    _export_onnx_with(True, net, x, path, opset, dynamic)
                except Exception as e:
                    raise RuntimeError(
                        f"ONNX export failed: classic exporter: {classic_error}; "
                        f"dynamo exporter: {e}"
                    ) from e
                used = "dynamo"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {"scale": str(net.scale), "model": type(model).__name__, "exporter": used}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def check_onnx(model: nn.Module, scale: int, path: str | Path, x: torch.Tensor) -> float:
    """Max abs difference between onnxruntime (CPU) on ``path`` and PyTorch on ``x``.

    ``x``: float (N, 3, H, W) in [0, 255]. Raises ``ValueError`` if the output shapes differ.
    """
    _require("onnxruntime")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: x.detach().float().cpu().numpy()})[0]
    with _inference(SingleScale(model, scale)) as net:
        want = net(x.float().to(_device(model)))
    return _max_diff(torch.from_numpy(got), want)


def export_torchscript(model: nn.Module, scale: int, path: str | Path) -> Path:
    """Trace ``model`` at ``scale`` to TorchScript (any batch and size); return the path.

    Traced, not scripted (the models' Python-side checks are not scriptable); the file is
    reloaded with ``torch.jit.load`` and must reproduce the eager output.
    """
    path = _prepare(path)
    net = SingleScale(model, scale)
    x = example_input(model)
    with _inference(net), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.x
        traced = torch.jit.trace(net, (x,))
        torch.jit.save(traced, str(path))
        diff = _max_diff(torch.jit.load(str(path), map_location=x.device)(x), net(x))
    if diff > VERIFY_ATOL:
        raise RuntimeError(f"{path}: reloaded TorchScript differs from eager by {diff}")
    return path


def export_program(model: nn.Module, scale: int, path: str | Path, dynamic: bool = True) -> Path:
    """Save ``torch.export.export`` of ``model`` at ``scale`` (``.pt2``); return the path.

    ``dynamic``: batch, height and width are ``Dim.DYNAMIC``. Load with
    ``torch.export.load(path).module()``; the reloaded program must reproduce the eager output.
    """
    if Path(path).suffix != ".pt2":
        raise ValueError(f"{path}: a torch.export archive must be named *.pt2")
    path = _prepare(path)
    net = SingleScale(model, scale)
    x = example_input(model)
    dyn = torch.export.Dim.DYNAMIC
    shapes = {INPUT: {0: dyn, 2: dyn, 3: dyn}} if dynamic else None
    with _inference(net):
        program = torch.export.export(net, (x,), dynamic_shapes=shapes)
        torch.export.save(program, str(path))
        diff = _max_diff(torch.export.load(str(path)).module()(x), net(x))
    if diff > VERIFY_ATOL:
        raise RuntimeError(f"{path}: reloaded exported program differs from eager by {diff}")
    return path


def build_model(
    name: str,
    scale: int,
    n_resblocks: int | None = None,
    n_feats: int | None = None,
    res_scale: float | None = None,
    scales: Sequence[int] = (2, 3, 4),
) -> nn.Module:
    """The preset ``name`` of the catalogue, randomly initialized, for ``scale`` (EDSR) or
    ``scales`` (MDSR); ``None`` keeps the preset value."""
    if name not in PRESETS:
        raise ValueError(f"unknown --model {name!r}; choose one of {PRESETS}")
    chosen = [scale] if CATALOGUE[name].arch == "EDSR" else list(scales)
    return build_net(name, chosen, n_resblocks, n_feats, res_scale)


def export_format(
    model: nn.Module,
    scale: int,
    fmt: str,
    out: str | Path,
    opset: int = 17,
    dynamic: bool = True,
    verify: bool = True,
) -> float | None:
    """Export in ``fmt`` (one of ``FORMATS``) to ``out``. For ONNX with ``verify`` and
    onnxruntime installed, return the max abs difference to PyTorch on a 1x3x24x20 input (the
    2x3x32x32 one if static), else ``None``. TorchScript and programs are always verified."""
    if fmt == "onnx":
        export_onnx(model, scale, out, opset=opset, dynamic=dynamic)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return None
        if not verify:
            return None
        x = example_input(model, batch=1, size=24)[..., :20]
        return check_onnx(model, scale, out, x if dynamic else example_input(model))
    if fmt == "torchscript":
        export_torchscript(model, scale, out)
    elif fmt == "exported":
        export_program(model, scale, out, dynamic=dynamic)
    else:
        raise ValueError(f"unknown --format {fmt!r}; choose one of {list(FORMATS)}")
    return None
