"""Training patches built on the training device (``data.on_device=true``).

The decoded uint8 training images (LR and HR, per scale) are packed once into flat buffers on
the device; each batch is then one gather per tensor: the crops, the dihedral augmentation and
the scale choice of paper Sec. 4.1 / 3.3 happen there, with no loader workers. The random
decisions come from :meth:`PatchBatches.plan` (the same generators as the worker pipeline), so
for a given seed the batches are those of :class:`~sr_lightning.data.patches.PatchBatches`,
bit for bit, also when resuming mid-epoch (``first_batch``) and under DDP (rank/world split).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import IterableDataset

from sr_lightning.core.inference import dihedral
from sr_lightning.data.io import to_rgb
from sr_lightning.data.patches import BatchPlan, PatchBatches


class PackedImages:
    """uint8 (3, h, w) images of different sizes in one flat buffer on ``device``, with each
    image's offset, width and plane size (h * w)."""

    def __init__(self, images: Sequence[torch.Tensor], device: torch.device):
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        numels = [3 * h * w for h, w in sizes]
        offsets = [0]
        for n in numels[:-1]:
            offsets.append(offsets[-1] + n)
        self.flat = torch.empty(sum(numels), dtype=torch.uint8, device=device)
        for img, start, n in zip(images, offsets, numels, strict=True):
            self.flat[start : start + n].copy_(to_rgb(img).reshape(-1))  # gray as RGB
        self.meta = torch.tensor(  # (3, n_images): offset, width, plane
            [offsets, [w for _, w in sizes], [h * w for h, w in sizes]],
            dtype=torch.int64,
            device=device,
        )

    def gather(
        self, images: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, reads: torch.Tensor
    ) -> torch.Tensor:
        """(N, 3, P, P) patches: patch n reads pixel ``reads[n, :, u, v]`` = (dy, dx) of the
        crop of image ``images[n]`` at (``ys[n]``, ``xs[n]``)."""
        offset, width, plane = self.meta[:, images].view(3, -1, 1, 1, 1)
        channel = torch.arange(3, device=self.flat.device).view(1, 3, 1, 1)
        rows, cols = reads[:, 0].unsqueeze(1), reads[:, 1].unsqueeze(1)
        index = offset + (ys.view(-1, 1, 1, 1) + rows) * width + xs.view(-1, 1, 1, 1) + cols
        return self.flat[index + channel * plane]


def dihedral_reads(patch: int, device: torch.device) -> torch.Tensor:
    """(8, 2, P, P): where output pixel (u, v) of ``dihedral(crop, t)`` reads in the crop
    (row, column): :func:`~sr_lightning.core.inference.dihedral` applied to coordinate grids, so
    both pipelines share one definition of the 8 transforms."""
    rows = torch.arange(patch).view(patch, 1).expand(patch, patch)
    grid = torch.stack([rows, rows.t()])  # (2, P, P): the row and the column of each pixel
    return torch.stack([dihedral(grid, t) for t in range(8)]).contiguous().to(device)


class DevicePatchBatches(IterableDataset):
    """The batches of ``source`` (a :class:`PatchBatches`: its images, seed, epoch,
    ``first_batch``, rank and world size), built on ``device`` by index arithmetic.

    Memory: every training image once per scale (LR and HR) on the device. Yields
    ``{"lr", "hr", "scale"}`` with uint8 tensors already on ``device``; the host only draws
    the decisions (a few dozen integers per batch) and copies them over without a sync.
    """

    def __init__(self, source: PatchBatches, device: torch.device | str):
        self.source = source
        self.device = torch.device(device)
        self.lr, self.hr, self.hr_reads = {}, {}, {}
        for s in source.scales:
            self.lr[s] = PackedImages([lr for lr, _ in source.images[s]], self.device)
            self.hr[s] = PackedImages([hr for _, hr in source.images[s]], self.device)
            self.hr_reads[s] = dihedral_reads(source.patch_size * s, self.device)
        self.lr_reads = dihedral_reads(source.patch_size, self.device)

    def __len__(self) -> int:
        return len(self.source)

    def make_batch(self, plan: BatchPlan) -> dict:
        host = torch.tensor([plan.images, plan.ys, plan.xs, plan.transforms], dtype=torch.int64)
        if self.device.type == "cuda":  # pinned: the copy is queued, the host does not wait
            host = host.pin_memory()
        images, ys, xs, transforms = host.to(self.device, non_blocking=True)
        s = plan.scale
        lr = self.lr[s].gather(images, ys, xs, self.lr_reads[transforms])
        hr = self.hr[s].gather(images, ys * s, xs * s, self.hr_reads[s][transforms])
        return {"lr": lr, "hr": hr, "scale": s}

    def __iter__(self) -> Iterator[dict]:
        src = self.source
        epoch_seed = src.epoch_seed()
        order = src.image_order(epoch_seed)
        for k in range(src.first_batch, src.updates_per_epoch):
            yield self.make_batch(src.plan(epoch_seed, k, order))
