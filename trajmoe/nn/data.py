"""Torch side of the windows: a dataset of whole batches and single-city batch loaders.

:class:`WindowDataset` serves the windows of :func:`trajmoe.sequences.make_windows` as tensors;
:class:`CityBatchLoader` (skorch's iterator) draws batches of ONE city each, as the retrieval head
ranks the cells of one city.

References
----------
docs/method.rst, "Training protocol" (every batch from one city; city order shuffled across batches).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .._constants import PAD, TOKEN_FEATURES, TOKEN_TARGETS

__all__ = ["WindowDataset", "CityBatchSampler", "CityBatchLoader"]


class WindowDataset(Dataset):
    """Torch dataset of windows whose items are whole batches.

    Indexing with an array of window indices returns ``(X, y)`` dicts of tensors cut to
    the longest window of that batch: ``X`` holds ``location``, ``slot``, ``dow``, ``gap``
    (int64, shape (B, L)) and ``city`` (int64, shape (B,)); ``y`` holds
    ``next_location`` and ``next_gap`` (int64, shape (B, L)).

    Parameters
    ----------
    windows : Windows
    """

    def __init__(self, windows):
        self.windows = windows
        self.lengths = (windows.location != PAD).sum(axis=1)

    def __len__(self):
        return len(self.windows)

    @property
    def city(self):
        """City index of every window, ndarray of int64 of shape (n_windows,)."""
        return self.windows.city

    def __getitem__(self, index):
        index = np.atleast_1d(np.asarray(index))
        width = max(int(self.lengths[index].max()), 1)
        w = self.windows
        X = {name: torch.from_numpy(np.ascontiguousarray(getattr(w, name)[index, :width]))
             for name in TOKEN_FEATURES}
        X["city"] = torch.from_numpy(w.city[index])
        y = {name: torch.from_numpy(np.ascontiguousarray(getattr(w, name)[index, :width]))
             for name in TOKEN_TARGETS}
        return X, y


class CityBatchSampler(Sampler):
    """Batches of window indices, each from ONE city (candidates are per city).

    Windows of similar length are batched together (within pools of 16 batches drawn
    at random when shuffling), so that little compute goes to padding.

    Parameters
    ----------
    city : ndarray of int64, shape (n_windows,)
    lengths : ndarray of int64, shape (n_windows,)
        Tokens per window.
    batch_size : int
        Windows per batch (>= 1).
    shuffle : bool, default False
        Draw pools at random within each city and shuffle the order of batches across
        cities (a new order every epoch); else batches follow city then length.
    random_state : int or None, default None

    Raises
    ------
    ValueError
        If ``batch_size`` is not an int >= 1.

    References
    ----------
    docs/method.rst, "Training protocol" (every batch from one city; city order shuffled across batches).
    """

    pool_batches = 16

    def __init__(self, city, lengths, batch_size, shuffle=False, random_state=None):
        self.city = np.asarray(city)
        self.lengths = np.asarray(lengths)
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1 (windows per batch), got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.rng = np.random.default_rng(random_state)

    def _batches(self):
        batches = []
        pool = self.batch_size * self.pool_batches
        for c in np.unique(self.city):
            idx = np.flatnonzero(self.city == c)
            if self.shuffle:
                idx = self.rng.permutation(idx)
            for start in range(0, len(idx), pool if self.shuffle else len(idx)):
                part = idx[start:start + (pool if self.shuffle else len(idx))]
                part = part[np.argsort(self.lengths[part], kind="stable")]
                batches.extend(np.split(part, np.arange(self.batch_size, len(part), self.batch_size)))
        if self.shuffle:
            batches = [batches[i] for i in self.rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        return iter(self._batches())

    def skip(self, n_epochs):
        """Draw and discard the orders of ``n_epochs`` epochs (a resumed run goes on with the
        order of the next epoch); nothing to do without shuffling."""
        for _ in range(int(n_epochs) if self.shuffle else 0):
            self._batches()

    def __len__(self):
        sizes = np.unique(self.city, return_counts=True)[1]
        return int(np.sum(-(-sizes // self.batch_size)))


class CityBatchLoader(DataLoader):
    """DataLoader of single-city batches of a :class:`WindowDataset` (skorch iterator).

    Parameters
    ----------
    dataset : WindowDataset
    batch_size : int, default 32
        Windows per batch.
    shuffle : bool, default False
    random_state : int or None
    skip_epochs : int, default 0
        Epoch orders to skip first (:meth:`CityBatchSampler.skip`): a run resumed from a
        checkpoint after ``k`` epochs passes ``k``.
    **kwargs
        Passed to :class:`torch.utils.data.DataLoader` (e.g. ``num_workers``).
    """

    def __init__(self, dataset, batch_size=32, shuffle=False, random_state=None, skip_epochs=0, **kwargs):
        sampler = CityBatchSampler(dataset.city, dataset.lengths, batch_size, shuffle, random_state)
        sampler.skip(skip_epochs)
        super().__init__(dataset, sampler=sampler, batch_size=None, **kwargs)
