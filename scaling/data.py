"""Real datasets for trials: Fashion-MNIST (local IDX files), CIFAR-10/100, ImageFolder, synthetic.

Small datasets live in memory as uint8 tensors and are resized once per trial to its
resolution. A fixed, seeded validation split (`data.val_images`, `data.split_seed`) is held out
of the training split, so every trial and seed is scored on the same images.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scaling.coefficients import ScalingError

FASHION_MNIST_ENV = "FASHION_MNIST_DIR"
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
FASHION_MNIST_TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # the 10,000-image test set


class DataError(ScalingError):
    """Missing or unusable data; the message says how to get it."""


@dataclass
class Split:
    """Images as uint8 NCHW (in-memory sets) or a torchvision dataset (ImageFolder), plus labels."""

    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    dataset: torch.utils.data.Dataset | None = None

    def __len__(self) -> int:
        return len(self.labels) if self.labels is not None else len(self.dataset)


@dataclass
class Data:
    """A dataset ready for one trial: train, held-out validation and (where the dataset has one) test splits.

    The validation split is for choices made during training; the test split scores the trial once, at the end.
    """

    name: str
    train: Split
    val: Split
    num_classes: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # where the files were read from
    test: Split | None = None


# ---- Fashion-MNIST ---- #


@functools.lru_cache(maxsize=8)  # a warm worker reads each file once, not once per trial
def _read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): big-endian dims after a 4-byte magic (read-only array)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_dirs(root: str | None, data_dir: str) -> list[Path]:
    """Folders searched for the IDX files, in order.

    A configured folder (data.root, else $FASHION_MNIST_DIR) is the only place searched: a user
    who names a folder must not silently get other files. Otherwise: Debian's package, then
    torchvision's download folder.
    """
    chosen = root or os.environ.get(FASHION_MNIST_ENV)
    if chosen:
        return [Path(chosen)]
    return [Path(DEBIAN_FASHION_MNIST), Path(data_dir) / "FashionMNIST" / "raw"]


def fashion_mnist_folder(root: str | None, data_dir: str, download: bool) -> Path:
    """The first folder holding the training IDX files (downloading them first when allowed)."""
    dirs = fashion_mnist_dirs(root, data_dir)
    for attempt in range(2):
        for folder in dirs:
            if all(_find_idx(folder, stem) for stem in FASHION_MNIST_FILES):
                return folder
        if attempt or not download:
            break
        from torchvision.datasets import FashionMNIST  # online only

        FashionMNIST(data_dir, train=True, download=True)
        dirs = [Path(data_dir) / "FashionMNIST" / "raw"]
    raise DataError(
        "data.root: Fashion-MNIST files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]) "
        "not found in " + ", ".join(map(str, dirs)) + "; get them with `apt-get install "
        f"dataset-fashion-mnist`, set data.root=DIR or {FASHION_MNIST_ENV}=DIR, or pass "
        "data.download=true when online"
    )


def load_fashion_mnist(root: str | None, data_dir: str, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Training images (N, 28, 28) and labels, from the first folder holding the IDX files."""
    folder = fashion_mnist_folder(root, data_dir, download)
    images, labels = (_find_idx(folder, stem) for stem in FASHION_MNIST_FILES)
    return _read_idx(images), _read_idx(labels), str(folder)


def load_fashion_mnist_test(folder: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The 10,000-image test set beside the training files, or None when it is absent."""
    images, labels = (_find_idx(Path(folder), stem) for stem in FASHION_MNIST_TEST_FILES)
    return (_read_idx(images), _read_idx(labels)) if images and labels else None


# ---- CIFAR ---- #


def load_cifar(name: str, root: str | None, data_dir: str, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """CIFAR-10/100 training images (N, 32, 32, 3) and labels through torchvision."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    folder = root or data_dir
    try:
        ds = cls(folder, train=True, download=download)
    except RuntimeError as err:
        raise DataError(
            f"data.root: {name} not found under {folder} ({err}); pass data.download=true when online "
            f"or set data.root to a folder holding {cls.base_folder}"
        ) from None
    return ds.data, np.asarray(ds.targets), folder


def load_cifar_test(name: str, folder: str) -> tuple[np.ndarray, np.ndarray] | None:
    """CIFAR's 10,000-image test set from the same folder, or None."""
    from torchvision.datasets import CIFAR10, CIFAR100

    try:
        ds = (CIFAR10 if name == "cifar10" else CIFAR100)(folder, train=False, download=False)
    except RuntimeError:
        return None
    return ds.data, np.asarray(ds.targets)


# ---- synthetic ---- #


def synthetic(n: int = 2000, size: int = 28, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Procedural gratings, one orientation per class, with random phase and noise (unit tests only)."""
    g = np.random.default_rng(seed)
    labels = g.integers(0, classes, n)
    yy, xx = np.mgrid[0:size, 0:size] / size
    theta = labels[:, None, None] * np.pi / classes
    phase = g.uniform(0, 2 * np.pi, (n, 1, 1))
    wave = np.sin(2 * np.pi * 3 * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    images = 127.5 + 90 * wave + g.normal(0, 30, (n, size, size))
    return np.clip(images, 0, 255).astype(np.uint8), labels


# ---- splits ---- #


def _tensors(images: np.ndarray, labels: np.ndarray) -> Split:
    """uint8 NCHW images and int64 labels from NHW(C) arrays."""
    x = torch.from_numpy(np.array(images, copy=True))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()  # NHW(C) -> NCHW
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def _split(images: np.ndarray, labels: np.ndarray, val_images: int, split_seed: int) -> tuple[Split, Split]:
    """Hold out a fixed, seeded validation split; the rest is the training pool."""
    if val_images >= len(labels):
        raise DataError(f"data.val_images={val_images} must be below the {len(labels)} training images")
    order = np.random.default_rng(split_seed).permutation(len(labels))
    every = _tensors(images, labels)
    val, train = torch.from_numpy(order[:val_images]), torch.from_numpy(order[val_images:])
    return Split(every.images[train], every.labels[train]), Split(every.images[val], every.labels[val])


def _folder_dirs(root: str | None) -> tuple[Path, Path | None]:
    """(training tree, test tree or None) of an ImageFolder root; a missing root is a DataError."""
    if not root or not Path(root).is_dir():
        raise DataError(f"data.root={root!r} is not a folder on this machine; allowed: an ImageFolder root with "
                        "train/ (and optionally val/, used as the test split) holding one subfolder per class, "
                        "visible where the sweep is planned and where trials run")
    base = Path(root)
    train = base / "train" if (base / "train").is_dir() else base
    return train, (base / "val" if (base / "val").is_dir() else None)


def _imagefolder(root: str | None, val_images: int, split_seed: int) -> tuple[Split, Split, Split | None, int]:
    """Training pool and held-out validation split from train/, and val/ (where present) as the test split."""
    from torchvision.datasets import ImageFolder

    train_dir, test_dir = _folder_dirs(root)
    train = ImageFolder(str(train_dir))
    if val_images >= len(train):
        raise DataError(f"data.val_images={val_images} must be below the {len(train)} training images")
    order = np.random.default_rng(split_seed).permutation(len(train)).tolist()
    sub = torch.utils.data.Subset
    test = Split(dataset=ImageFolder(str(test_dir))) if test_dir else None
    return (Split(dataset=sub(train, order[val_images:])), Split(dataset=sub(train, order[:val_images])), test,
            len(train.classes))


def load(cfg_data, data_dir: str) -> Data:
    """Load dataset `cfg_data.name` with its held-out validation split."""
    name = cfg_data.name
    gray = ((0.2860,), (0.3530,))  # Fashion-MNIST training-set mean/std
    rgb = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    test = None
    if name == "fashion_mnist":
        images, labels, source = load_fashion_mnist(cfg_data.root, data_dir, cfg_data.download)
        classes, stats, test = 10, gray, load_fashion_mnist_test(source)
    elif name in ("cifar10", "cifar100"):
        images, labels, source = load_cifar(name, cfg_data.root, data_dir, cfg_data.download)
        classes, stats = (10 if name == "cifar10" else 100), ((0.491, 0.482, 0.447), (0.247, 0.243, 0.262))
        test = load_cifar_test(name, source)
    elif name == "synthetic":
        images, labels = synthetic(size=cfg_data.native_size, seed=cfg_data.split_seed)
        classes, stats, source = 10, ((0.5,), (0.4,)), "procedural"
        test = synthetic(n=1000, size=cfg_data.native_size, seed=cfg_data.split_seed + 1)
    elif name == "imagefolder":
        train, val, test_split, classes = _imagefolder(cfg_data.root, cfg_data.val_images, cfg_data.split_seed)
        return Data(name, train, val, classes, 3, *rgb, source=str(cfg_data.root),
                    test=_test_subset(test_split, cfg_data))
    else:
        raise DataError(f"data.name={name!r} is unknown; allowed: fashion_mnist, cifar10, cifar100, "
                        "imagefolder, synthetic")
    train, val = _split(images, labels, cfg_data.val_images, cfg_data.split_seed)
    return Data(name, train, val, classes, train.images.shape[1], *stats, source=source,
                test=_test_subset(_tensors(*test), cfg_data) if test is not None else None)


def _test_subset(test: Split | None, cfg_data) -> Split | None:
    """The test split, or the `data.test_images` of it that a quick check scores (fixed by split_seed)."""
    n = getattr(cfg_data, "test_images", None)
    if test is None or n is None:
        return test
    if n < 1:
        raise DataError(f"data.test_images={n}: allowed: a positive number of images, or null for all")
    return subsample(test, n, cfg_data.split_seed)


def subsample(split: Split, n: int | None, seed: int) -> Split:
    """The first n images of a seeded shuffle (all when n is None)."""
    if n is None or n >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    if split.dataset is not None:
        return Split(dataset=torch.utils.data.Subset(split.dataset, idx.tolist()))
    return Split(split.images[idx], split.labels[idx])


# ---- the in-memory splits at a trial's resolution (batches: scaling/loader.py) ---- #


def prepare(split: Split, resolution: int, mean, std) -> Split:
    """Resize an in-memory split once to `resolution` px and normalise it (float32 NCHW)."""
    if split.images is None:
        return split
    x = split.images.float().div_(255)
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return Split((x - m) / s, split.labels)


def shape_of(cfg_data) -> tuple[int, int]:
    """(input channels, classes) of a dataset, without loading its images (for the plan stage).

    An ImageFolder's classes are counted on its files, which must be visible where the sweep is
    planned: a guess would give the trial another identity on the node that trains it."""
    if cfg_data.name in ("fashion_mnist", "synthetic"):
        return 1, 10
    if cfg_data.name in ("cifar10", "cifar100"):
        return 3, 10 if cfg_data.name == "cifar10" else 100
    train, _ = _folder_dirs(cfg_data.root)
    classes = sum(p.is_dir() for p in train.iterdir())
    if not classes:
        raise DataError(f"data.root={cfg_data.root}: no class folders in {train}; allowed: an ImageFolder root "
                        "with one subfolder per class")
    return 3, classes


@functools.lru_cache(maxsize=16)
def folder_images(tree: str) -> int:
    """Images of an ImageFolder tree, as torchvision's ImageFolder lists them (image files in class folders,
    symlinks followed)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    return len(make_dataset(tree, extensions=IMG_EXTENSIONS, allow_empty=True))


# ---- fingerprints: what the data files hold, for the trial identity ---- #

SYNTHETIC_VERSION = "gratings-1"  # bump when `synthetic` draws other images


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    """SHA-1 of a file's bytes (cached per size and mtime within a process)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _contents(paths: list[Path]) -> str:
    """One hash of several files' contents (names do not matter: a .gz and a plain copy differ, as they read the same
    numbers only after decompression, so both are hashed as stored)."""
    parts = []
    for p in paths:
        st = p.stat()
        parts.append(_file_hash(str(p), st.st_size, st.st_mtime_ns))
    return hashlib.sha1("".join(parts).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=16)
def _listing(tree: str) -> str:
    """Hash of an ImageFolder tree's relative file names and sizes (content hashing a million JPEGs is too slow),
    symlinked folders followed, as torchvision's ImageFolder follows them (a farm of links to class folders)."""
    h = hashlib.sha1()
    base = Path(tree)
    for folder, dirs, files in os.walk(base, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            h.update(f"{path.relative_to(base)}\t{path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _cifar_files(name: str, folder: str) -> tuple[list[Path], list[Path]]:
    base = Path(folder) / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    train = [base / f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else [base / "train"]
    return train, [base / ("test_batch" if name == "cifar10" else "test")]


def fingerprint(cfg_data, data_dir: str) -> dict[str, str | None]:
    """What a trial's data files hold: {"train": hash, "test": hash or None when there is no test split}.

    Content hashes for Fashion-MNIST and CIFAR (cached per file), names and sizes for ImageFolder
    trees. A path is not enough: two datasets under one path must not share trial ids."""
    name = cfg_data.name
    if name == "synthetic":
        return {"train": SYNTHETIC_VERSION, "test": SYNTHETIC_VERSION}
    if name == "fashion_mnist":
        folder = fashion_mnist_folder(cfg_data.root, data_dir, cfg_data.download)
        train = [_find_idx(folder, stem) for stem in FASHION_MNIST_FILES]
        test = [_find_idx(folder, stem) for stem in FASHION_MNIST_TEST_FILES]
        return {"train": _contents(train), "test": _contents(test) if all(test) else None}
    if name in ("cifar10", "cifar100"):
        _, _, folder = load_cifar(name, cfg_data.root, data_dir, cfg_data.download)
        train, test = _cifar_files(name, folder)
        return {"train": _contents(train), "test": _contents(test) if all(p.is_file() for p in test) else None}
    train_dir, test_dir = _folder_dirs(cfg_data.root)
    return {"train": _listing(str(train_dir)), "test": _listing(str(test_dir)) if test_dir else None}
