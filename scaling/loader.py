"""A split's batches for a trial: each rank's share of every global batch, in the order one process takes them.

In-memory splits (`scaling.data.prepare`d) are indexed directly; file datasets (ImageFolder) go through a
DataLoader built once per trial, whose workers persist across epochs and whose memory is pinned on CUDA. Each
image's augmentation is seeded by (epoch seed, index), so the numbers do not depend on the number of
workers, the rank that loads the image, or the world size (`data.num_workers` is outside the identity).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from scaling.data import Split


def _folder_transform(resolution: int, train: bool, mean, std):
    from torchvision import transforms as T

    if train:
        ops = [T.RandomResizedCrop(resolution), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(int(round(resolution / 0.875))), T.CenterCrop(resolution)]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch, random and numpy for one sample's augmentation, restoring the caller's generators."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class Augmented(torch.utils.data.Dataset):
    """Item i of a dataset through `transform`, with its random draws fixed by (seed, i), asked for as the key
    (i, seed): the same images whatever the number of DataLoader workers (so `data.num_workers` is outside the
    identity), the rank that loads them, or the epoch a persistent worker was started in."""

    def __init__(self, dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform
        self.loaded = 0  # items this process loaded (in-process loading; workers count their own copies)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        i, seed = key
        self.loaded += 1
        image, label = self.dataset[i]
        with _seeded(seed * 1_000_003 + i):
            return self.transform(image), label


class Order(torch.utils.data.Sampler):
    """One epoch's batches as one process takes them (a seeded shuffle in training, else in order; the
    ragged last training batch dropped), each cut to this rank's share: every world-th item from `rank`,
    as keys (index, seed) of `Augmented`. Set `seed` before each epoch."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.shuffle, self.rank, self.world = n, batch_size, shuffle, rank, world
        self.seed = 0

    def order(self) -> torch.Tensor:
        """The one-process order: torch's DataLoader draws its workers' base seed, then the permutation."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed)
        torch.empty((), dtype=torch.int64).random_(generator=g)  # as DataLoader(shuffle=True, generator=g) did
        return torch.randperm(self.n, generator=g)

    def _stop(self) -> int:
        n = self.n
        return n - n % self.batch_size if self.shuffle and n >= self.batch_size else n

    def __iter__(self):
        order = self.order()
        for i in range(0, self._stop(), self.batch_size):
            share = order[i:i + self.batch_size][self.rank::self.world].tolist()
            if share:  # a last scoring batch smaller than the world leaves some ranks none
                yield [(j, self.seed) for j in share]

    def __len__(self) -> int:
        return -(-self._stop() // self.batch_size)


class Batches:
    """One split's batches for a whole trial: this rank's share of every global batch (a file dataset's images
    decoded and augmented only there), in the one-process order; a file dataset's DataLoader is built once, its
    workers persistent and its memory pinned on CUDA. In-memory splits must be `prepare`d first."""

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool, hflip: bool = False, resolution: int = 0,
                 mean=(), std=(), num_workers: int = 0, transform=None, rank: int = 0, world: int = 1,
                 pin_memory: bool = False) -> None:
        self.split, self.batch_size, self.shuffle, self.hflip = split, batch_size, shuffle, hflip
        self.rank, self.world = rank, world
        self.sampler = Order(len(split), batch_size, shuffle, rank, world)
        self.loader = None
        if split.dataset is not None:
            self.dataset = Augmented(split.dataset, transform or _folder_transform(resolution, shuffle, mean, std))
            self.loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=self.sampler, num_workers=num_workers, pin_memory=pin_memory,
                persistent_workers=num_workers > 0)

    def epoch(self, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (images, labels) of each global batch of the epoch that `seed` draws."""
        self.sampler.seed = seed
        if self.loader is not None:
            yield from self.loader
            return
        g = torch.Generator().manual_seed(seed)
        n, r, w = len(self.split), self.rank, self.world
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for i in range(0, self.sampler._stop(), self.batch_size):
            idx = order[i:i + self.batch_size]
            x = self.split.images[idx[r::w]]
            if self.hflip:  # drawn for the whole global batch, as one process draws them
                flip = (torch.rand(len(idx), generator=g) < 0.5)[r::w]
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            if len(x):
                yield x, self.split.labels[idx[r::w]]


def batches(split: Split, batch_size: int, *, shuffle: bool, seed: int = 0, **kw) -> Iterator[tuple[torch.Tensor,
                                                                                                    torch.Tensor]]:
    """One epoch of `Batches` (keywords as there; `transform`: a file dataset's own transform; default:
    random-resized crop and flip in training, centre crop otherwise)."""
    yield from Batches(split, batch_size, shuffle=shuffle, **kw).epoch(seed)
