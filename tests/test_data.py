"""Real data: Fashion-MNIST from the Debian package's IDX files, lookup order, splits, ImageFolder."""

import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scaling import data, loader
from scaling.config import DataConfig

DEBIAN = data.DEBIAN_FASHION_MNIST


def cfg(**kw):
    return OmegaConf.structured(DataConfig(**kw))


def test_fashion_mnist_debian_files_are_real(monkeypatch):
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    images, labels, source = data.load_fashion_mnist(None, "nowhere", download=False)
    assert source == DEBIAN
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10  # balanced classes
    assert 0.27 < images.mean() / 255 < 0.30  # Fashion-MNIST mean 0.286


def test_lookup_order_root_then_env_then_debian(tmp_path, monkeypatch):
    copy = tmp_path / "fm"
    copy.mkdir()
    for name in data.FASHION_MNIST_FILES:
        shutil.copy(f"{DEBIAN}/{name}.gz", copy)
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(copy))
    assert data.load_fashion_mnist(None, "x", False)[2] == str(copy)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(str(empty), "x", False)  # a named folder is not silently replaced


def test_split_is_fixed_and_held_out():
    a = data.load(cfg(val_images=1000), "x")
    b = data.load(cfg(val_images=1000), "x")
    assert len(a.val) == 1000 and len(a.train) == 59000
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)
    c = data.load(cfg(val_images=1000, split_seed=1), "x")
    assert not torch.equal(a.val.images, c.val.images)
    train = a.train.images.flatten(1)[:3000]
    assert not (train[:, None, :] == a.val.images.flatten(1)[None, :50, :]).all(-1).any()


def test_a_test_subset_is_fixed_and_counted_by_the_estimate():
    """data.test_images (quick checks) scores a fixed seeded part of the test split; the cost estimate counts it."""
    from scaling import cost

    whole, a, b = (data.load(cfg(val_images=500, test_images=n), "x").test for n in (None, 1000, 1000))
    assert len(whole) == 10_000 and len(a) == 1000 and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, whole.images[:1000])  # a shuffle, not the first 1,000 files
    quick = OmegaConf.create({"data": OmegaConf.structured(DataConfig(test_images=1000)),
                              "train": {"train_images": 256, "batch_size": 32, "epochs": 1, "monitor_images": 500}})
    assert cost.work(quick).score_images == 500 + 5000 + 1000  # monitored, the held-out split, the test subset
    with pytest.raises(data.DataError, match="data.test_images=0: allowed"):
        data.load(cfg(test_images=0), "x")


def test_prepare_resizes_and_normalises():
    d = data.load(cfg(val_images=500), "x")
    v = data.prepare(d.val, 24, d.mean, d.std)
    assert v.images.shape == (500, 1, 24, 24) and v.images.dtype == torch.float32
    assert abs(v.images.mean().item()) < 0.1 and 0.8 < v.images.std().item() < 1.2


def test_synthetic_and_batches():
    d = data.load(cfg(name="synthetic", val_images=200), "x")
    tr = data.prepare(data.subsample(d.train, 300, 0), 20, d.mean, d.std)
    sizes = [len(y) for _, y in loader.batches(tr, 64, shuffle=True, hflip=True)]
    assert sizes == [64] * 4  # ragged last training batch dropped
    assert sum(len(y) for _, y in loader.batches(tr, 64, shuffle=False)) == 300


def test_imagefolder(tmp_path):
    from PIL import Image

    d = data.load(cfg(val_images=100), "x")
    for i in range(60):
        folder = tmp_path / "train" / f"class{int(d.val.labels[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(d.val.images[i, 0].numpy()).convert("RGB").save(folder / f"{i}.png")
    f = data.load(cfg(name="imagefolder", root=str(tmp_path), val_images=20), "x")
    assert len(f.train) == 40 and len(f.val) == 20 and f.in_chans == 3
    x, y = next(loader.batches(f.val, 8, shuffle=False, resolution=32, mean=f.mean, std=f.std))
    assert x.shape == (8, 3, 32, 32)
    with pytest.raises(data.DataError, match="data.root"):
        data.load(cfg(name="imagefolder", root=str(tmp_path / "missing")), "x")


def test_cifar_offline_says_how_to_get_it(tmp_path):
    # CIFAR comes through torchvision's download (no network here): the error names the fix
    with pytest.raises(data.DataError, match=r"cifar10 not found under .*data.download=true"):
        data.load(cfg(name="cifar10", root=str(tmp_path), native_size=32, resolution=24), "x")


def _folder(tmp_path, with_val: bool):
    from PIL import Image

    d = data.load(cfg(val_images=100), "x")
    for split, n in (("train", 48), ("val", 12)) if with_val else (("train", 48),):
        for i in range(n):
            folder = tmp_path / split / f"class{int(d.val.labels[i]) % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(d.val.images[i, 0].numpy()).convert("RGB").save(folder / f"{i}.png")
    return data.load(cfg(name="imagefolder", root=str(tmp_path), val_images=8), "x")


def test_imagefolder_val_folder_is_the_test_split(tmp_path):
    """Choices are made on images held out of train/; val/ (ImageNet's) is scored once, for the report."""
    f = _folder(tmp_path, with_val=True)
    assert len(f.train) == 40 and len(f.val) == 8 and f.test is not None and len(f.test) == 12


def test_augmentation_is_the_same_with_any_number_of_workers(tmp_path):
    """data.num_workers is outside the identity, so it must not change a single pixel of any batch."""
    f = _folder(tmp_path, with_val=False)
    kw = dict(shuffle=True, seed=7, resolution=24, mean=f.mean, std=f.std)
    torch.manual_seed(0)
    inline = list(loader.batches(f.train, 8, num_workers=0, **kw))
    torch.manual_seed(123)  # the global generator must not matter either
    workers = list(loader.batches(f.train, 8, num_workers=2, **kw))
    assert len(inline) == len(workers) == 5
    for (xa, ya), (xb, yb) in zip(inline, workers):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    other_epoch = next(iter(loader.batches(f.train, 8, num_workers=0, **{**kw, "seed": 8})))
    assert not torch.equal(other_epoch[0], inline[0][0])  # the seed does change the draws


def test_each_rank_decodes_only_its_share_of_every_batch_in_the_one_process_order(tmp_path):
    """Two ranks of a file dataset: each decodes and augments 1/2 of each global batch (counted on its own
    dataset), and the two shares, interleaved, are the one-process batches pixel for pixel."""
    f = _folder(tmp_path, with_val=False)  # 40 training images
    kw = dict(shuffle=True, resolution=24, mean=f.mean, std=f.std)
    one = loader.Batches(f.train, 8, **kw)
    ranks = [loader.Batches(f.train, 8, rank=r, world=2, **kw) for r in (0, 1)]
    whole = list(one.epoch(seed=5))
    shares = [list(b.epoch(seed=5)) for b in ranks]
    assert one.dataset.loaded == 40 and [b.dataset.loaded for b in ranks] == [20, 20]
    assert len(whole) == len(shares[0]) == len(shares[1]) == 5
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shares):
        assert len(y0) == len(y1) == 4
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1) and torch.equal(y[0::2], y0)
    scoring = [list(loader.Batches(f.train, 16, shuffle=False, rank=r, world=3, resolution=24, mean=f.mean,
                                 std=f.std).epoch()) for r in range(3)]
    assert sum(len(y) for s in scoring for _, y in s) == 40  # scoring: every image once, over the ranks


def test_in_memory_shares_and_flips_are_the_one_process_ones():
    d = data.load(cfg(name="synthetic", val_images=200), "x")
    tr = data.prepare(data.subsample(d.train, 300, 0), 20, d.mean, d.std)
    whole = list(loader.batches(tr, 64, shuffle=True, hflip=True, seed=3))
    shares = [list(loader.batches(tr, 64, shuffle=True, hflip=True, seed=3, rank=r, world=4)) for r in range(4)]
    for i, (x, y) in enumerate(whole):
        for r in range(4):
            assert torch.equal(shares[r][i][0], x[r::4]) and torch.equal(shares[r][i][1], y[r::4])


class _Pids(torch.utils.data.Dataset):
    """Images whose label is the pid of the process that loaded them."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        import os

        from PIL import Image

        return Image.new("RGB", (8, 8)), os.getpid()


def test_a_file_loader_is_built_once_and_its_workers_persist_across_epochs():
    import torchvision.transforms as T

    b = loader.Batches(data.Split(dataset=_Pids()), 4, shuffle=True, num_workers=2, transform=T.ToTensor())
    built = b.loader
    first = {int(p) for _, y in b.epoch(seed=1) for p in y}
    second = {int(p) for _, y in b.epoch(seed=2) for p in y}
    assert b.loader is built and len(first) == 2 and first == second  # the same two worker processes


def test_every_dataset_is_one_registry_entry_with_its_loader_and_config():
    """scaling/datasets.py owns each dataset's facts: the config check allows its names, each config file
    names one, every in-memory entry has a loader, its statistics fit its channels, and its recorded split
    sizes are what the loader reads (Fashion-MNIST here); an unknown name is one line naming the allowed."""
    import subprocess
    import sys
    from pathlib import Path

    from scaling import datasets

    root = Path(__file__).parents[1]
    assert {OmegaConf.load(f).name for f in (root / "conf/data").glob("*.yaml")} == set(datasets.NAMES)
    for d in datasets.REGISTRY.values():
        assert (d.name in data.LOADERS) == d.in_memory and len(d.mean) == len(d.std) == d.in_chans
    fm = data.load(cfg(val_images=1000), "nowhere")
    assert (len(fm.train) + len(fm.val), len(fm.test)) == datasets.REGISTRY["fashion_mnist"].sizes
    assert (fm.in_chans, fm.num_classes) == datasets.shape_of(cfg())
    with pytest.raises(data.DataError, match=r"^data.name='mnist' is unknown; allowed: fashion_mnist, cifar10, "):
        datasets.get("mnist")
    probe = "import sys, scaling.datasets, scaling.config; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip() == "False"  # the plan's facts without torch


def test_a_dataset_added_as_one_entry_and_its_loader_trains_end_to_end(tmp_path, monkeypatch):
    """A new in-memory dataset: its registry entry, its loader and its files, and nothing else. The config
    check accepts it, the plan knows its shape and size, its files give it an identity, and it loads."""
    from scaling import config, datasets

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (400, 16, 16), dtype=np.uint8), rng.integers(0, 4, 400)
    np.save(tmp_path / "images.npy", images)

    def load_tiny(cfg_data, data_dir):
        x = np.load(tmp_path / "images.npy")
        return x[:300], labels[:300], str(tmp_path), (x[300:], labels[300:])

    monkeypatch.setitem(datasets.REGISTRY, "tiny", datasets.Dataset("tiny", 1, 4, (0.5,), (0.25,), (300, 100)))
    monkeypatch.setitem(data.LOADERS, "tiny", load_tiny)
    monkeypatch.setitem(data.FILES, "tiny", lambda c, d: ([tmp_path / "images.npy"], [tmp_path / "images.npy"]))
    c = cfg(name="tiny", val_images=50)
    whole = OmegaConf.structured(config.Config)
    whole.data.name = "tiny"
    config.validate(whole)  # the config check reads the registry
    d = data.load(c, "x")
    assert (len(d.train), len(d.val), len(d.test), d.num_classes, d.in_chans) == (250, 50, 100, 4, 1)
    assert datasets.shape_of(c) == (1, 4) and datasets.split_sizes(c) == (300, 100)
    assert data.fingerprint(c, "x")["train"] == data._contents([tmp_path / "images.npy"])
    monkeypatch.delitem(data.FILES, "tiny")
    with pytest.raises(data.DataError, match="data.name='tiny' has no FILES entry"):
        data.fingerprint(c, "x")
