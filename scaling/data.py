"""Real datasets for trials: Fashion-MNIST (local IDX files), CIFAR-10/100, ImageFolder, synthetic.

What each dataset is (channels, classes, normalisation, sizes) is its entry in scaling/datasets.py;
here are its loader (LOADERS) and the files its identity hashes (FILES). Small datasets live in memory
as uint8 tensors and are resized once per trial to its resolution. A fixed, seeded validation split
(`data.val_images`, `data.split_seed`) is held out of the training split, so every trial and seed is
scored on the same images.
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

from scaling import datasets
from scaling.datasets import DataError, folder_dirs, folder_images, shape_of  # noqa: F401 - data's API

FASHION_MNIST_ENV = "FASHION_MNIST_DIR"
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
FASHION_MNIST_TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # the 10,000-image test set


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


def _imagefolder(root: str | None, val_images: int, split_seed: int) -> tuple[Split, Split, Split | None, int]:
    """Training pool and held-out validation split from train/, and val/ (where present) as the test split."""
    from torchvision.datasets import ImageFolder

    train_dir, test_dir = folder_dirs(root)
    train = ImageFolder(str(train_dir))
    if val_images >= len(train):
        raise DataError(f"data.val_images={val_images} must be below the {len(train)} training images")
    order = np.random.default_rng(split_seed).permutation(len(train)).tolist()
    sub = torch.utils.data.Subset
    test = Split(dataset=ImageFolder(str(test_dir))) if test_dir else None
    return (Split(dataset=sub(train, order[val_images:])), Split(dataset=sub(train, order[:val_images])), test,
            len(train.classes))


def _fashion_mnist(cfg_data, data_dir: str) -> tuple:
    images, labels, source = load_fashion_mnist(cfg_data.root, data_dir, cfg_data.download)
    return images, labels, source, load_fashion_mnist_test(source)


def _cifar(cfg_data, data_dir: str) -> tuple:
    images, labels, source = load_cifar(cfg_data.name, cfg_data.root, data_dir, cfg_data.download)
    return images, labels, source, load_cifar_test(cfg_data.name, source)


def _synthetic(cfg_data, data_dir: str) -> tuple:
    images, labels = synthetic(size=cfg_data.native_size, seed=cfg_data.split_seed)
    return images, labels, "procedural", synthetic(n=1000, size=cfg_data.native_size, seed=cfg_data.split_seed + 1)


LOADERS = {  # in-memory datasets: (cfg.data, data_dir) -> (images NHW(C), labels, source, test (images, labels) | None)
    "fashion_mnist": _fashion_mnist, "cifar10": _cifar, "cifar100": _cifar, "synthetic": _synthetic,
}


def load(cfg_data, data_dir: str) -> Data:
    """Load dataset `cfg_data.name` with its held-out validation split."""
    d = datasets.get(cfg_data.name)
    if not d.in_memory:
        train, val, test_split, classes = _imagefolder(cfg_data.root, cfg_data.val_images, cfg_data.split_seed)
        return Data(d.name, train, val, classes, d.in_chans, d.mean, d.std, source=str(cfg_data.root),
                    test=_test_subset(test_split, cfg_data))
    images, labels, source, test = LOADERS[d.name](cfg_data, data_dir)
    train, val = _split(images, labels, cfg_data.val_images, cfg_data.split_seed)
    return Data(d.name, train, val, d.classes, train.images.shape[1], d.mean, d.std, source=source,
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


def _fashion_mnist_files(cfg_data, data_dir: str) -> tuple[list[Path | None], list[Path | None]]:
    folder = fashion_mnist_folder(cfg_data.root, data_dir, cfg_data.download)
    return ([_find_idx(folder, stem) for stem in FASHION_MNIST_FILES],
            [_find_idx(folder, stem) for stem in FASHION_MNIST_TEST_FILES])


def _cifar_files(cfg_data, data_dir: str) -> tuple[list[Path], list[Path]]:
    name = cfg_data.name
    _, _, folder = load_cifar(name, cfg_data.root, data_dir, cfg_data.download)
    base = Path(folder) / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    train = [base / f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else [base / "train"]
    return train, [base / ("test_batch" if name == "cifar10" else "test")]


FILES = {  # datasets read from fixed files: (cfg.data, data_dir) -> (training files, test files; None: absent)
    "fashion_mnist": _fashion_mnist_files, "cifar10": _cifar_files, "cifar100": _cifar_files,
}


def fingerprint(cfg_data, data_dir: str) -> dict[str, str | None]:
    """What a trial's data files hold: {"train": hash, "test": hash or None when there is no test split}.

    Content hashes for the datasets of fixed files (cached per file), names and sizes for ImageFolder
    trees, a version for the generated images. A path is not enough: two datasets under one path must
    not share trial ids."""
    d = datasets.get(cfg_data.name)
    if d.name == "synthetic":
        return {"train": SYNTHETIC_VERSION, "test": SYNTHETIC_VERSION}
    if not d.in_memory:
        train_dir, test_dir = folder_dirs(cfg_data.root)
        return {"train": _listing(str(train_dir)), "test": _listing(str(test_dir)) if test_dir else None}
    if d.name not in FILES:
        raise DataError(f"data.name={d.name!r} has no FILES entry in scaling/data.py; allowed: a dataset whose files "
                        "its trial identity can hash")
    train, test = FILES[d.name](cfg_data, data_dir)
    return {"train": _contents(train), "test": _contents(test) if all(p and p.is_file() for p in test) else None}
