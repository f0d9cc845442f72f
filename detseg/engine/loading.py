"""Training data loading: bad samples skipped and counted, deterministic shuffling, resumable.

A sample whose loading raises is replaced by a ``BadSample`` marker naming its index and the
reason; ``collate_skipping`` moves markers out of the batch so the training loop can report
and count them (this works with worker processes too, since markers travel with the batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from detseg.errors import DetsegError

# Errors that mean "this sample is unreadable", not "the code is wrong".
SAMPLE_ERRORS = (DetsegError, OSError, ValueError, KeyError, IndexError)


@dataclass(frozen=True)
class BadSample:
    """A sample that failed to load: dataset ``index``, its image id or path, and why."""

    index: int
    ident: str
    reason: str


class SkippingDataset(Dataset):
    """Wraps ``dataset`` so that a sample failing with one of ``SAMPLE_ERRORS`` becomes a marker."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def _ident(self, index: int) -> str:
        paths = getattr(self.dataset, "image_paths", None)
        if paths is not None and index < len(paths):
            return str(paths[index])
        return f"#{index}"

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except SAMPLE_ERRORS as err:
            return BadSample(index, self._ident(index), f"{type(err).__name__}: {err}")


@dataclass
class Batch:
    """A collated batch: images, targets, and the markers of samples that failed to load."""

    images: list[torch.Tensor]
    targets: list[dict]
    bad: list[BadSample]


def collate_skipping(samples: Sequence[Any]) -> Batch:
    """Split ``samples`` into good ``(image, target)`` pairs and ``BadSample`` markers."""
    good = [s for s in samples if not isinstance(s, BadSample)]
    bad = [s for s in samples if isinstance(s, BadSample)]
    return Batch([g[0] for g in good], [g[1] for g in good], bad)


class ResumableSampler(Sampler[int]):
    """The indices of ``DistributedSampler(seed, epoch)`` for one rank, from position ``start``.

    The order depends only on ``(seed, epoch, rank, world_size)``, so an interrupted epoch can
    continue at the sample where it stopped.
    """

    def __init__(self, dataset_len: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        self.dataset_len = dataset_len
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def _indices(self) -> list[int]:
        # DistributedSampler only takes len() of its dataset; its hints ask for a Dataset.
        indices = cast("Dataset[int]", range(self.dataset_len))
        sampler: DistributedSampler[int] = DistributedSampler(
            indices, num_replicas=self.world_size, rank=self.rank,
            shuffle=self.shuffle, seed=self.seed,
        )
        sampler.set_epoch(self.epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self.start)


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Indices ``rank, rank + world_size, ...`` below ``n`` (no padding): one rank's share."""
    return list(range(rank, n, world_size))
