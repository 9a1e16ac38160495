"""The datasets a trial can train on: one registry entry each, with what the config check, the plan, the
cost estimate and the loaders need to know before an image is read.

No torch at import: the plan and the config check read this module; scaling/data.py loads the images,
by each entry's `loader`. Adding a dataset is an entry here and its loader (and files, for the trial
identity) in scaling/data.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from scaling.coefficients import ScalingError

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR_STATS = ((0.491, 0.482, 0.447), (0.247, 0.243, 0.262))


class DataError(ScalingError):
    """Missing or unusable data; the message says how to get it."""


@dataclass(frozen=True)
class Dataset:
    """What is known about a dataset without loading it."""

    name: str  # data.name
    in_chans: int
    classes: int | None  # None: one class per folder, counted on the files (ImageFolder)
    mean: tuple[float, ...]  # normalisation
    std: tuple[float, ...]
    sizes: tuple[int, int] | None  # (training pool before the held-out split, test split); None: counted
    in_memory: bool = True  # uint8 tensors resized once per trial; False: files decoded per batch by timm


REGISTRY = {d.name: d for d in (
    Dataset("fashion_mnist", 1, 10, (0.2860,), (0.3530,), (60_000, 10_000)),  # the training set's mean/std
    Dataset("cifar10", 3, 10, *CIFAR_STATS, (50_000, 10_000)),
    Dataset("cifar100", 3, 100, *CIFAR_STATS, (50_000, 10_000)),
    Dataset("imagefolder", 3, None, *IMAGENET_STATS, None, in_memory=False),
    Dataset("synthetic", 1, 10, (0.5,), (0.4,), (2_000, 1_000)),  # scaling/data.py `synthetic` defaults
)}
NAMES = tuple(REGISTRY)


def get(name: str) -> Dataset:
    """The entry of `name`; an unknown name is a DataError naming the allowed ones."""
    if name not in REGISTRY:
        raise DataError(f"data.name={name!r} is unknown; allowed: {', '.join(NAMES)}")
    return REGISTRY[name]


def folder_dirs(root: str | None) -> tuple[Path, Path | None]:
    """(training tree, test tree or None) of an ImageFolder root; a missing root is a DataError."""
    if not root or not Path(root).is_dir():
        raise DataError(f"data.root={root!r} is not a folder on this machine; allowed: an ImageFolder root with "
                        "train/ (and optionally val/, used as the test split) holding one subfolder per class, "
                        "visible where the sweep is planned and where trials run")
    base = Path(root)
    train = base / "train" if (base / "train").is_dir() else base
    return train, (base / "val" if (base / "val").is_dir() else None)


@functools.lru_cache(maxsize=16)
def folder_images(tree: str) -> int:
    """Images of an ImageFolder tree, as torchvision's ImageFolder lists them (image files in class folders,
    symlinks followed)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset  # deferred: torch

    return len(make_dataset(tree, extensions=IMG_EXTENSIONS, allow_empty=True))


def shape_of(cfg_data) -> tuple[int, int]:
    """(input channels, classes) of a dataset, without loading its images (for the plan stage).

    An ImageFolder's classes are counted on its files, which must be visible where the sweep is
    planned: a guess would give the trial another identity on the node that trains it."""
    d = get(cfg_data.name)
    if d.classes is not None:
        return d.in_chans, d.classes
    train, _ = folder_dirs(cfg_data.root)
    classes = sum(p.is_dir() for p in train.iterdir())
    if not classes:
        raise DataError(f"data.root={cfg_data.root}: no class folders in {train}; allowed: an ImageFolder root "
                        "with one subfolder per class")
    return d.in_chans, classes


def split_sizes(cfg_data, has_test: bool = True) -> tuple[int, int]:
    """(training pool before the held-out validation split, test split) of a dataset, in images."""
    d = get(cfg_data.name)
    if d.sizes is not None:
        pool, test = d.sizes
        return pool, test if has_test else 0
    train_dir, test_dir = folder_dirs(cfg_data.root)
    return folder_images(str(train_dir)), folder_images(str(test_dir)) if test_dir and has_test else 0
