"""Training patches (paper Sec. 4.1): random aligned LR/HR crops, 8 dihedral augmentations,
one scale per batch (MDSR, Sec. 3.3), built as whole uint8 batches inside the loader workers.

Why an IterableDataset of whole batches: every batch must hold one scale, and under DDP every
rank must train the same scale at the same step (otherwise the scale-specific modules of MDSR get
gradients averaged with zeros). Every decision of update ``k`` (its scale, then for each
patch of the *global* batch its image, crop and transform) is drawn from (epoch seed, k) alone,
and rank ``r`` of ``N`` takes patches ``[r * b, (r + 1) * b)`` of it (``b`` = global batch / N):
all ranks agree without communication, and the same seed and global batch train the same
network on 1, 2 or N processes, up to float summation order (a run may also resume on another
number of processes: the stream goes on). The epoch seed is a function of (seed, epoch) alone,
and an epoch can start at batch ``first_batch``: a run resumed mid-epoch from a checkpoint sees
exactly the batches the uninterrupted run would have seen (the data module sets both before
each epoch).
The decisions of a batch (:meth:`PatchBatches.plan`) also drive the device-side pipeline
(``device_patches``, ``data.on_device``), which therefore yields the same batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import IterableDataset, get_worker_info

from sr_lightning.core.inference import dihedral


def derive_seed(*parts: int) -> int:
    """A 56-bit seed from integers, well mixed (for independent per-batch generators)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=7).digest(), "big")


@dataclass(frozen=True)
class BatchPlan:
    """The random decisions behind one batch: its scale and, per patch, the source image, the
    LR crop's top-left corner (the HR crop's is ``scale`` times it) and the dihedral transform
    (0, the identity, without augmentation). Shared by the worker pipeline (crops on the CPU)
    and the device pipeline (one gather on the device, ``device_patches``)."""

    scale: int
    images: list[int]
    ys: list[int]
    xs: list[int]
    transforms: list[int]


def crop_pair(
    lr: torch.Tensor, hr: torch.Tensor, patch: int, scale: int, y: int, x: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned crops: LR ``patch`` x ``patch`` at (y, x), HR ``patch * scale`` at (y*s, x*s)."""
    hp = patch * scale
    return (
        lr[..., y : y + patch, x : x + patch],
        hr[..., y * scale : y * scale + hp, x * scale : x * scale + hp],
    )


class PatchBatches(IterableDataset):
    """Yields ``updates_per_epoch`` batches ``{"lr", "hr", "scale"}`` of uint8 patches per epoch.

    ``images[s]`` is the list of (LR, HR) uint8 (3, h, w) tensors (memory maps) at scale ``s``;
    ``batch_size`` is this process's share of the global batch (``world_size`` shares). Every
    image is visited equally often: patch sources follow random permutations of the
    image list, split between ranks, as the reference code's ``repeat``.
    """

    def __init__(
        self,
        images: dict[int, Sequence[tuple[torch.Tensor, torch.Tensor]]],
        patch_size: int,
        batch_size: int,
        updates_per_epoch: int,
        augment: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.images = images
        self.scales = sorted(images)
        self.n_images = len(images[self.scales[0]])
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.updates_per_epoch = updates_per_epoch
        self.augment = augment
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0  # set by the data module before each epoch (fresh workers see it)
        self.first_batch = 0  # > 0 when a run resumes mid-epoch

    def __len__(self) -> int:
        return self.updates_per_epoch

    def epoch_seed(self) -> int:
        return derive_seed(self.seed, self.epoch)

    def batch_scale(self, epoch_seed: int, k: int) -> int:
        """Scale of batch ``k``: the same on every rank and worker for a given epoch seed."""
        gen = torch.Generator().manual_seed(derive_seed(epoch_seed, k))
        return self.scales[int(torch.randint(len(self.scales), (1,), generator=gen))]

    def image_order(self, epoch_seed: int) -> torch.Tensor:
        """Source image of every patch of the epoch, all ranks together (shared permutations)."""
        gen = torch.Generator().manual_seed(epoch_seed)
        need = self.updates_per_epoch * self.batch_size * self.world_size
        n_perm = -(-need // self.n_images)
        return torch.cat([torch.randperm(self.n_images, generator=gen) for _ in range(n_perm)])

    def plan(self, epoch_seed: int, k: int, order: torch.Tensor) -> BatchPlan:
        """This rank's share of update ``k``: the global batch's decisions come from one
        generator seeded by (epoch seed, k), patch after patch (y, x, then the transform), and
        this rank keeps its slice. The same in a worker, in process or on the device."""
        scale = self.batch_scale(epoch_seed, k)
        # (epoch seed, k, 0): one process draws what it drew when this was seeded per rank
        gen = torch.Generator().manual_seed(derive_seed(epoch_seed, k, 0))
        total = self.batch_size * self.world_size
        images = order[k * total : (k + 1) * total].tolist()
        ys, xs, transforms = [], [], []
        for i in images:
            h, w = self.images[scale][i][0].shape[-2:]
            ys.append(int(torch.randint(0, h - self.patch_size + 1, (1,), generator=gen)))
            xs.append(int(torch.randint(0, w - self.patch_size + 1, (1,), generator=gen)))
            transforms.append(int(torch.randint(8, (1,), generator=gen)) if self.augment else 0)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return BatchPlan(scale, images[mine], ys[mine], xs[mine], transforms[mine])

    def make_batch(self, epoch_seed: int, k: int, order: torch.Tensor) -> dict:
        plan = self.plan(epoch_seed, k, order)
        lrs, hrs = [], []
        for i, y, x, t in zip(plan.images, plan.ys, plan.xs, plan.transforms, strict=True):
            lr, hr = crop_pair(*self.images[plan.scale][i], self.patch_size, plan.scale, y, x)
            lrs.append(dihedral(lr, t))
            hrs.append(dihedral(hr, t))
        return {"lr": torch.stack(lrs), "hr": torch.stack(hrs), "scale": plan.scale}

    def __iter__(self) -> Iterator[dict]:
        epoch_seed = self.epoch_seed()
        order = self.image_order(epoch_seed)
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        # the DataLoader takes batches round-robin from its workers: worker w makes every n-th
        for k in range(self.first_batch + worker, self.updates_per_epoch, n_workers):
            yield self.make_batch(epoch_seed, k, order)
