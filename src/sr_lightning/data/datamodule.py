"""SRDataModule: DIV2K (or any HR folder) patches for training; whole images for evaluation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, DistributedSampler

from sr_lightning.core.inference import default_device
from sr_lightning.data.datasets import (
    DIV2K_VAL,
    PROTOCOLS,
    EvalDataset,
    Pair,
    aligned_pair,
    degraded,
    div2k_pairs,
    eval_dataset,
    resolve_pairs,
)
from sr_lightning.data.degradation import check_degradation
from sr_lightning.data.device_patches import DevicePatchBatches
from sr_lightning.data.io import ImageError, to_rgb
from sr_lightning.data.patches import PatchBatches
from sr_lightning.data.shards import SHARDS, shard_train_images
from sr_lightning.data.workers import loader_worker_init

log = logging.getLogger(__name__)


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank r takes images r, r + world, ... or, given ``indices``, exactly those (its share
    from :func:`eval_indices`, which may be :data:`NO_IMAGE`): every image is scored exactly
    once. (torch's DistributedSampler pads Set5's 5 images to 6 on 2 ranks, counting one
    twice.) Lightning leaves a DistributedSampler it is given in place.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, indices: list[int] | None = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = indices

    def _indices(self) -> list[int]:
        if self.indices is not None:
            return list(self.indices)
        return list(range(self.rank, len(self.dataset), self.num_replicas))

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


NO_IMAGE = -1  # the index of the item a rank without any evaluation image scores (nothing)


def eval_indices(lengths: Sequence[int], rank: int, world: int) -> list[list[int]]:
    """The images of each evaluation loader (set x scale) that rank ``rank`` of ``world``
    scores: round robin over all loaders' images in order (image j of loader k goes to rank
    ``(images before loader k + j) % world``), so every image is scored once and the ranks
    get at most one image more than each other.

    A rank gets no image when there are fewer images in all than ranks (2 validation photos
    on 4 ranks, Set5 x2 on 8 GPUs): its first loader then yields one :data:`NO_IMAGE` item,
    which the steps skip (:func:`is_no_image`). The rank still runs the evaluation loop and
    its epoch-end hooks, which sum the metrics over all ranks (collectives every rank must
    join), and contributes nothing to them. Other loaders of a rank may be empty (Lightning
    is told that is intended: ``allow_zero_length_dataloader_with_multiple_devices``)."""
    out, start = [], 0
    for n in lengths:
        out.append(list(range((rank - start) % world, n, world)))
        start += n
    if out and not any(out):
        out[0] = [NO_IMAGE]
    return out


class ScoredOnce(torch.utils.data.Dataset):
    """An evaluation set whose index :data:`NO_IMAGE` is an empty item (a 1x1 LR, index -1)."""

    def __init__(self, data: EvalDataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        if i != NO_IMAGE:
            return self.data[i]
        scale = self.data.scale
        return {
            "lr": torch.zeros(3, 1, 1, dtype=torch.uint8),
            "hr": torch.zeros(3, scale, scale, dtype=torch.uint8),
            "gray": False,
            "name": "",
            "index": NO_IMAGE,
            "scale": scale,
        }


def is_no_image(batch: dict) -> bool:
    """Whether an evaluation batch is the :data:`NO_IMAGE` item of a rank without images."""
    return bool((torch.as_tensor(batch["index"]) == NO_IMAGE).all())


def per_device_batch(batch_size: int, world_size: int) -> int:
    """The recipe's batch is global (the paper's 16 patches per update, for any number of
    devices x nodes): each process takes ``batch_size / world_size`` of it."""
    if batch_size % world_size:
        raise ValueError(
            f"data.batch_size={batch_size} (the global batch) is not divisible by "
            f"trainer.devices x trainer.num_nodes = {world_size}"
        )
    return batch_size // world_size


VALIDATION_SUFFIX = " (validation)"  # the label of a test set scored on validation images


def label_validation_overlap(
    test_sets: Sequence[EvalDataset], val_sets: Sequence[EvalDataset]
) -> list[EvalDataset]:
    """``test_sets``, each one that shares HR images with a validation set at its scale
    relabelled (in place) ``"<name> (validation)"`` (e.g. ``Set5 (validation)``).

    Validation chooses the best checkpoint, so a test number on any of those images is biased
    upward: ``data.val_sets=[Set5]`` with ``data.benchmarks=[Set5]``, a folder given under
    two names, or DIV2K test and validation ranges that overlap (the paper's 801-900 table
    with the default validation images 801-810). Images are the same when their resolved HR
    paths are. The label is the set's name everywhere downstream: the ``dataset`` column of
    ``results.json`` and ``per_image.csv``, the ``test/<set>/x<s>/...`` metric keys and the
    printed table.
    """
    seen: dict[int, set[Path]] = {}
    for data in val_sets:
        seen.setdefault(data.scale, set()).update(p.hr.resolve() for p in data.pairs)
    out = []
    for data in test_sets:
        shared = seen.get(data.scale, set()) & {p.hr.resolve() for p in data.pairs}
        if shared and not data.name.endswith(VALIDATION_SUFFIX):
            data.name = data.name + VALIDATION_SUFFIX
        out.append(data)
    return out


class SRDataModule(L.LightningDataModule):
    """Data for SR training and evaluation (paper Sec. 4.1), configured by ``conf/data/*.yaml``.

    - train: random ``patch_size`` LR patches (HR ``patch_size * scale``) from ``train_set``
      (``DIV2K`` images ``train_range``, ``sample``, or a folder of HR images whose LR is made
      with the MATLAB-exact imresize), 8 dihedral augmentations, one scale per batch drawn
      among ``scales``, ``updates_per_epoch`` batches per epoch of ``batch_size`` patches in
      all (the global batch: each of N processes takes ``batch_size / N``); ``train_set=shards``
      streams a folder written by ``sr-shard`` from ``shards_url`` through a node cache of at
      most ``stream_cache_gb`` (the same patches as from the folder, see ``shards.py``);
    - val: whole images of ``val_sets`` at every scale (one dataloader per set and scale):
      the ``val`` split of ``sample``, DIV2K images ``div2k_val_range``;
    - test: the ``benchmarks`` at every scale: the held-out ``test`` split of ``sample``,
      DIV2K images ``div2k_test_range``. A test set that shares HR images with a validation set
      (the images that chose the checkpoint) is labelled ``"<set> (validation)"``, see
      :func:`label_validation_overlap`.
    Each evaluation set is scored with its protocol (``protocol``: ``auto`` chooses by set,
    see ``datasets.protocol_for``).
    ``degradation``: HR -> LR for training and evaluation alike, ``bicubic`` (the LR files) or
    RDN's ``bd`` / ``dn`` (Sec. 5; generated from HR, see ``degradation.py``), named by every
    protocol.
    Decoded images are cached as uint8 ``.npy`` memory maps (``cache_dir``), built once.
    ``on_device``: the training images live on the training device and each batch is built
    there (the same batches as the workers', bit for bit; no workers; see ``device_patches``).
    """

    def __init__(
        self,
        root: str,
        scales: Sequence[int] = (2,),
        patch_size: int = 48,
        batch_size: int = 16,
        num_workers: int = 4,
        benchmarks: Sequence[str] = ("Set5", "Set14", "B100", "Urban100"),
        train_set: str = DIV2K_VAL,
        train_range: Sequence[int] = (1, 800),
        val_sets: Sequence[str] = (DIV2K_VAL,),
        div2k_val_range: Sequence[int] = (801, 810),
        div2k_test_range: Sequence[int] = (811, 900),
        updates_per_epoch: int = 1000,
        augment: bool = True,
        cache_dir: str | None = None,
        pin_memory: bool = True,
        seed: int = 0,
        protocol: str = "auto",
        on_device: bool = False,
        degradation: str = "bicubic",
        shards_url: str | None = None,
        stream_cache_gb: float = 50.0,
    ):
        super().__init__()
        self.root = str(root)
        self.scales = [int(s) for s in scales]
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.benchmarks = list(benchmarks)
        self.train_set = train_set
        self.train_range = tuple(train_range)
        self.val_sets = list(val_sets)
        self.div2k_val_range = tuple(div2k_val_range)
        self.div2k_test_range = tuple(div2k_test_range)
        self.updates_per_epoch = updates_per_epoch
        self.augment = augment
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.pin_memory = pin_memory
        self.seed = seed
        self.protocol = protocol
        self.on_device = on_device
        self.degradation = degradation
        self.shards_url = shards_url  # data.train_set=shards: see data/shards.py
        self.stream_cache_gb = stream_cache_gb
        self.device_batches: DevicePatchBatches | None = None  # built at the first epoch
        self.per_device_batch_size = batch_size  # set for the run's world size in setup()
        self.validate()
        self.train_data: PatchBatches | None = None
        self.val_data: list[EvalDataset] = []
        self.test_data: list[EvalDataset] = []
        self._described = False  # the evaluation sets are logged once, at the first setup
        # a rank may have no image of some evaluation set (eval_indices): intended
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def validate(self) -> None:
        """Refuse bad values before anything is loaded, naming the key."""
        checks = {
            "data.patch_size": self.patch_size,
            "data.batch_size": self.batch_size,
            "data.updates_per_epoch": self.updates_per_epoch,
        }
        for key, value in checks.items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{key}={value!r} must be a positive integer")
        if not self.scales or any(s < 2 for s in self.scales):
            raise ValueError(f"data.scales={self.scales} must be a non-empty list of scales >= 2")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"data.protocol={self.protocol!r}: allowed values are {PROTOCOLS}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers={self.num_workers} must be >= 0")
        check_degradation(self.degradation)
        if self.train_set == SHARDS and self.on_device:
            raise ValueError(
                f"data.on_device=true needs every training image on the device; "
                f"data.train_set={SHARDS} streams them: set data.on_device=false"
            )
        for key, value in (
            ("data.div2k_val_range", self.div2k_val_range),
            ("data.div2k_test_range", self.div2k_test_range),
        ):
            if not (
                len(value) == 2
                and all(isinstance(v, int) for v in value)
                and 1 <= value[0] <= value[1]
            ):
                raise ValueError(
                    f"{key}={list(value)} must be [first, last] DIV2K image numbers, "
                    f"1 <= first <= last (validation {list(self.div2k_val_range)}, "
                    f"test {list(self.div2k_test_range)})"
                )

    def describe_sets(self) -> str:
        """``validation: DIV2K 801-810; test: Set5, DIV2K 811-900`` (logged at setup)."""

        def names(sets: Sequence[str], div2k_range: tuple[int, ...]) -> str:
            first, last = div2k_range
            named = [f"{s} {first}-{last}" if s == DIV2K_VAL else s for s in sets]
            return ", ".join(named) or "none"

        return (
            f"validation: {names(self.val_sets, self.div2k_val_range)}; "
            f"test: {names(self.benchmarks, self.div2k_test_range)}"
        )

    # ---- training -------------------------------------------------------------------------
    def train_pairs(self, scale: int) -> list[Pair]:
        if self.train_set == DIV2K_VAL:
            pairs = div2k_pairs(self.root, scale, *self.train_range)
        else:
            pairs = resolve_pairs(self.root, self.train_set, scale, self.cache_dir, split="train")
        return degraded(pairs, self.degradation)

    def load_train_images(self) -> dict[int, list[tuple[torch.Tensor, torch.Tensor]]]:
        """(LR, HR) uint8 RGB memory maps per scale, checked to fit a patch (streamed from
        ``shards_url`` for ``train_set=shards``)."""
        if self.train_set == SHARDS:
            return shard_train_images(
                self.shards_url,
                self.scales,
                self.patch_size,
                self.degradation,
                self.cache_dir,
                self.stream_cache_gb,
            )
        images: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for scale in self.scales:
            images[scale] = []
            for pair in self.train_pairs(scale):
                lr, hr = aligned_pair(pair, scale, self.cache_dir)
                if min(lr.shape[-2:]) < self.patch_size:
                    raise ImageError(
                        f"{pair.lr or pair.hr}: LR size {tuple(lr.shape[-2:])} at x{scale} is "
                        f"smaller than data.patch_size={self.patch_size}"
                    )
                rgb = (to_rgb(lr), to_rgb(hr))  # gray trains as RGB
                images[scale].append(rgb)
        return images

    def check_sets(self, train: bool = True, decode: bool = True) -> None:
        """Find every data set the run will read (training set, validation and test sets,
        each in the split and DIV2K range it will use) and decode the evaluation images into
        the cache (``decode``), before the first update: a wrong ``data.root`` or a corrupt
        file fails now, naming it, not after hours of training."""
        if train and self.train_set == SHARDS:
            self.load_train_images()  # reads and checks the manifest, fetches no image
        elif train:
            for scale in self.scales:
                self.train_pairs(scale)
        val, test = self.eval_sets(self.val_sets, "val"), self.eval_sets(self.benchmarks, "test")
        for data in [*val, *test]:
            for pair in data.pairs if decode else ():
                aligned_pair(pair, data.scale, self.cache_dir)

    def prepare_data(self) -> None:
        """Decode every training image once into the cache (local rank 0 only; for fitting,
        not for a test-only run such as ``eval.py``)."""
        if self.trainer is None or self.trainer.state.fn == TrainerFn.FITTING:
            self.load_train_images()

    def setup(self, stage: str | None = None) -> None:
        rank, world = self._rank_world()
        if rank == 0 and not self._described:
            log.info("evaluation sets: %s", self.describe_sets())
            self._described = True
        if stage in ("fit", None):
            self.per_device_batch_size = per_device_batch(self.batch_size, world)
            self.train_data = PatchBatches(
                self.load_train_images(),
                self.patch_size,
                self.per_device_batch_size,
                self.updates_per_epoch,
                self.augment,
                self.seed,
                rank,
                world,
            )
        if stage in ("fit", "validate", None):
            self.val_data = self.eval_sets(self.val_sets, split="val")
        if stage in ("test", None):
            self.test_data = self.test_sets()

    def test_sets(self) -> list[EvalDataset]:
        """The ``benchmarks`` (split ``test``, DIV2K ``div2k_test_range``) at every scale,
        each labelled ``"<set> (validation)"`` where it shares images with a validation set
        (:func:`label_validation_overlap`)."""
        val = self.val_data or self.eval_sets(self.val_sets, "val")
        sets = label_validation_overlap(self.eval_sets(self.benchmarks, "test"), val)
        shared = list(dict.fromkeys(d.name for d in sets if d.name.endswith(VALIDATION_SUFFIX)))
        if shared and self._rank_world()[0] == 0:
            log.warning("test sets that share images with validation, so labelled: %s", shared)
        return sets

    def eval_sets(self, names: Sequence[str], split: str) -> list[EvalDataset]:
        """``names`` at every scale: ``split`` ``val`` (the validation sets: the sample's
        ``val`` photos, DIV2K ``div2k_val_range``) or ``test`` (the test sets: the sample's
        ``test`` photos, DIV2K ``div2k_test_range``)."""
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r}: 'val' or 'test'")
        div2k_range = self.div2k_val_range if split == "val" else self.div2k_test_range
        return [
            eval_dataset(
                self.root,
                name,
                scale,
                self.cache_dir,
                div2k_range,
                split,
                self.protocol,
                self.degradation,
            )
            for name in names
            for scale in self.scales
        ]

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def epoch_position(self) -> tuple[int, int]:
        """(epoch, first batch) of the epoch about to run: (e, 0), or mid-epoch after a resume.

        Needs ``reload_dataloaders_every_n_epochs=1`` (our trainer configs set it): Lightning
        then asks for a new loader at each epoch, after restoring a checkpoint's counters.
        """
        if self.trainer is None:
            return 0, 0
        epoch = self.trainer.current_epoch
        done = self.trainer.global_step - epoch * self.updates_per_epoch  # no accumulation
        return epoch, min(max(done, 0), self.updates_per_epoch)

    def train_dataloader(self) -> DataLoader:
        assert self.train_data is not None, "call setup('fit') first"
        # batch k of epoch e is a function of (seed, e, k): a resumed run replays the stream
        self.train_data.epoch, self.train_data.first_batch = self.epoch_position()
        if self.on_device:
            if self.device_batches is None or self.device_batches.source is not self.train_data:
                device = (
                    self.trainer.strategy.root_device
                    if self.trainer is not None
                    else torch.device(default_device())
                )
                self.device_batches = DevicePatchBatches(self.train_data, device)
            return DataLoader(self.device_batches, batch_size=None, num_workers=0)
        workers = self.num_workers
        return DataLoader(
            self.train_data,
            batch_size=None,  # the dataset yields whole single-scale batches
            num_workers=workers,
            pin_memory=self.pin_memory and default_device() == "cuda",
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=loader_worker_init(),
        )

    def _eval_loaders(self, sets: list[EvalDataset]) -> list[DataLoader]:
        """One loader per set and scale; under DDP each rank takes its share of the images
        (:func:`eval_indices`: each image once, a rank without any scores nothing)."""
        rank, world = self._rank_world()
        shares = eval_indices([len(ds) for ds in sets], rank, world)
        return [
            DataLoader(
                ScoredOnce(ds) if world > 1 else ds,
                batch_size=1,  # whole images of different sizes
                sampler=UnpaddedDistributedSampler(ds, world, rank, share) if world > 1 else None,
                num_workers=min(self.num_workers, 1) if share else 0,
                worker_init_fn=loader_worker_init(),
            )
            for ds, share in zip(sets, shares, strict=True)
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.val_data)

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.test_data)
