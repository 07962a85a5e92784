"""Windows streamed from Parquet files in single-city batches, a few row groups at a time.

:class:`ParquetWindows` is the dataset of a split of a :class:`trajmoe.streaming.WindowStore`
(one file per city, row groups of a bounded number of windows); :class:`ParquetBatchLoader`
(skorch's iterator for it) draws an epoch as follows, from ``random_state`` and the files'
metadata only:

1. the row groups of all cities in a random order, taken ``open_groups`` at a time;
2. within each row group, the windows in a random order, cut into pools of 16 batches, sorted
   by length within a pool and cut into batches (as :class:`trajmoe.nn.CityBatchSampler`);
3. the batches of the open row groups in a random order.

Memory holds ``open_groups`` row groups, whatever the data size. Every rank of a process group
draws the same batches and keeps its share of each (:func:`trajmoe.nn.parallel.share_rows`), so
all ranks of a step work on one city; every rank reads every row group (decoding is
replicated, memory is not).

References
----------
docs/method.rst, "Training protocol" (every batch from one city; city order shuffled across batches).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset

from .._constants import IGNORE_INDEX, PAD, TOKEN_FEATURES
from .data import CityBatchSampler
from .parallel import BatchShare, ignore_targets, rank_and_world, share_rows

__all__ = ["ParquetWindows", "ParquetBatchLoader"]


class ParquetWindows(IterableDataset):
    """Windows of Parquet files, one city per file (:func:`trajmoe.streaming.write_windows`).

    Iterating yields one epoch of ``(X, y, share)`` batches (:class:`ParquetBatchLoader` with
    its defaults); skorch uses :attr:`batch_loader` to iterate.

    Parameters
    ----------
    files : list of path-like
        Parquet files with columns ``city`` (int32) and lists ``location``, ``slot``, ``dow``,
        ``gap``.
    n_locations : ndarray of int64, shape (n_cities,)
        Vocabulary size per city (a location equal to it is out of the vocabulary).

    Attributes
    ----------
    groups : ndarray of int64, shape (n_groups, 3)
        ``(file index, row group, windows)`` of every row group.
    """

    def __init__(self, files, n_locations):
        import pyarrow.parquet as pq

        self.files = [str(f) for f in files]
        self.n_locations = np.asarray(n_locations, np.int64)
        groups = []
        for i, f in enumerate(self.files):
            meta = pq.ParquetFile(f).metadata
            groups += [(i, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        self.groups = np.asarray(groups, np.int64).reshape(-1, 3)

    def __len__(self):
        return int(self.groups[:, 2].sum())

    @property
    def batch_loader(self):
        """The loader class that reads these windows in single-city batches
        (:class:`ParquetBatchLoader`): the estimators train on it instead of their in-memory
        loader."""
        return ParquetBatchLoader

    def __iter__(self):
        return iter(ParquetBatchLoader(self))

    def read_group(self, index):
        """Row group ``index`` of :attr:`groups` as flat token arrays.

        Returns
        -------
        dict
            ``city`` (int64, (n,)), ``offsets`` (int64, (n + 1,)) and the flat int64 token
            arrays ``location``, ``slot``, ``dow``, ``gap`` (shape (offsets[-1],)).
        """
        import pyarrow.parquet as pq

        f, g, _ = self.groups[index]
        table = pq.ParquetFile(self.files[f]).read_row_group(int(g))
        out = {"city": table.column("city").to_numpy().astype(np.int64)}
        for name in TOKEN_FEATURES:
            column = table.column(name).combine_chunks()
            out[name] = column.flatten().to_numpy().astype(np.int64)
            if "offsets" not in out:
                offsets = column.offsets.to_numpy().astype(np.int64)
                out["offsets"] = offsets - offsets[0]
        return out

    def batch(self, group, rows):
        """``(X, y)`` tensors of windows ``rows`` of a read row group (:meth:`read_group`), as
        :class:`trajmoe.nn.WindowDataset` gives them: tokens cut to the longest window,
        targets the next token's location (ignored when out of the vocabulary) and gap."""
        start, length = group["offsets"][rows], np.diff(group["offsets"])[rows]
        width = max(int(length.max()), 1)
        pos = np.arange(width)
        valid = pos < length[:, None]
        flat = np.where(valid, start[:, None] + pos, 0)
        tokens = {name: np.where(valid, group[name][flat], PAD if name == "location" else 0) for name in TOKEN_FEATURES}
        city = group["city"][rows]
        has_next = np.zeros_like(valid)
        has_next[:, :-1] = valid[:, 1:]
        next_location = np.full_like(tokens["location"], IGNORE_INDEX)
        next_location[:, :-1] = tokens["location"][:, 1:]
        in_vocabulary = next_location < self.n_locations[city][:, None]
        next_location = np.where(has_next & in_vocabulary, next_location, IGNORE_INDEX)
        next_gap = np.full_like(tokens["gap"], IGNORE_INDEX)
        next_gap[:, :-1] = tokens["gap"][:, 1:]
        next_gap = np.where(has_next, next_gap, IGNORE_INDEX)
        X = {name: torch.from_numpy(value) for name, value in tokens.items()}
        X["city"] = torch.from_numpy(city)
        return X, {"next_location": torch.from_numpy(next_location), "next_gap": torch.from_numpy(next_gap)}


class ParquetBatchLoader:
    """This rank's shares of the single-city batches of a :class:`ParquetWindows` (skorch's
    ``iterator_train``/``iterator_valid``); see the module's description of an epoch.

    Parameters
    ----------
    dataset : ParquetWindows
    batch_size : int, default 32
        Windows per GLOBAL batch (all ranks together).
    shuffle : bool, default False
        False: row groups in file order, each sorted by length (validation).
    random_state : int or None
    skip_epochs : int, default 0
        Epoch orders to draw and discard (a resumed run; needs no reading).
    open_groups : int, default 4
        Row groups held in memory at once.
    rank, world_size : int or None
        None: from the process group.
    """

    pool_batches = CityBatchSampler.pool_batches

    def __init__(self, dataset, batch_size=32, shuffle=False, random_state=None, skip_epochs=0, open_groups=4,
                 rank=None, world_size=None):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.open_groups = int(open_groups)
        self.rng = np.random.default_rng(random_state)
        for _ in range(int(skip_epochs) if shuffle else 0):
            self._plan()
        default_rank, default_world = rank_and_world()
        self.rank = default_rank if rank is None else int(rank)
        self.world_size = default_world if world_size is None else int(world_size)

    def _plan(self):
        """The epoch's blocks: (row groups, their window orders, the order of their batches'
        pieces), drawn from the metadata alone."""
        n = len(self.dataset.groups)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        pool = self.batch_size * self.pool_batches if self.shuffle else None
        blocks = []
        for start in range(0, n, self.open_groups):
            groups = order[start:start + self.open_groups]
            perms = [self.rng.permutation(int(self.dataset.groups[g, 2])) if self.shuffle
                     else np.arange(self.dataset.groups[g, 2]) for g in groups]
            n_batches = sum(self._n_batches(len(p), pool) for p in perms)
            batch_order = self.rng.permutation(n_batches) if self.shuffle else np.arange(n_batches)
            blocks.append((groups, perms, pool, batch_order))
        return blocks

    def _n_batches(self, n, pool):
        pool = pool or max(n, 1)
        full, rest = divmod(n, pool)
        return full * -(-pool // self.batch_size) + -(-rest // self.batch_size)

    def __len__(self):
        pool = self.batch_size * self.pool_batches if self.shuffle else None
        return int(sum(self._n_batches(int(n), pool) for n in self.dataset.groups[:, 2]))

    def __iter__(self):
        for groups, perms, pool, batch_order in self._plan():
            batches = []
            for g, perm in zip(groups, perms):
                data = self.dataset.read_group(int(g))
                lengths = np.diff(data["offsets"])
                step = pool or max(len(perm), 1)
                for s in range(0, len(perm), step):
                    part = perm[s:s + step]
                    part = part[np.argsort(lengths[part], kind="stable")]
                    batches += [(data, b) for b in np.split(part, np.arange(self.batch_size, len(part),
                                                                            self.batch_size))]
            for i in batch_order:
                data, rows = batches[i]
                share, real = share_rows(len(rows), self.rank, self.world_size)
                X, y = self.dataset.batch(data, rows[share])
                yield X, (y if real else ignore_targets(y)), BatchShare(len(rows), real)
