"""Training data larger than memory: cell tables built by chunks, windows written once to
sharded Parquet and read back in batches.

A data set too large for one process's memory comes as chunks of visits (e.g. one file per
range of users), each holding ALL the visits of its users. Two passes over the chunks prepare
it for training, and memory holds one chunk at a time plus per-city statistics that grow
with the number of distinct cells, venues and coordinates, not with the number of visits:

1. :class:`ChunkedEncoder` (``partial_fit`` per chunk; defined in :mod:`trajmoe.encoder`, next to the
   encoder whose fit it reproduces) gives exactly the
   :class:`~trajmoe.SpatialSemanticEncoder` that ``fit`` on all chunks at once gives;
2. :func:`write_windows` makes each chunk's training and validation windows with that encoder
   and appends them to Parquet files (pyarrow), one set of files per city, in row groups of
   at most ``rows_per_group`` windows.

:func:`trajmoe.scale.pretrain` (and ``trajmoe pretrain --windows``) trains on the store, read
back by :class:`trajmoe.nn.shards.ParquetWindows` a few row groups at a time, on one
process or many (every rank reads the same row groups and trains on its share of each batch).

Examples
--------
>>> from trajmoe import TrajMoERegressor                                  # doctest: +SKIP
>>> from trajmoe.scale import pretrain                                    # doctest: +SKIP
>>> from trajmoe.streaming import WindowStore, write_windows              # doctest: +SKIP
>>> model = TrajMoERegressor(random_state=0)                              # doctest: +SKIP
>>> write_windows(model, chunks, "windows/")   # chunks: re-iterable      # doctest: +SKIP
>>> pretrain(model, WindowStore("windows/"))                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import numbers
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._constants import PAD
from ._json import json_data
from .encoder import ChunkedEncoder
from .exceptions import SchemaError

__all__ = ["ChunkedEncoder", "write_windows", "WindowStore", "WINDOW_COLUMNS", "STORE_FORMAT"]

#: Token columns of a stored window (lists, one value per visit) and their Parquet types;
#: the targets follow from them (the next token's location and gap).
WINDOW_COLUMNS = {"location": "int32", "slot": "int8", "dow": "int8", "gap": "int8"}
#: Version of the store's layout, written to ``store.json``.
STORE_FORMAT = 1
#: Estimator parameters that shape the windows: a store is trained on with the same values.
WINDOW_PARAMS = ("window_days", "stride_days", "max_tokens", "min_stays", "validation_fraction", "random_state",
                 "city_tz")
#: What a store holds in its folder (replaced as a whole when it is written again).
STORE_FILES = ("train", "valid", "encoder.pkl", "store.json")


def _arrow_table(windows):
    """Parquet rows of windows: ``city`` (int32) and the token lists of :data:`WINDOW_COLUMNS`."""
    import pyarrow as pa

    lengths = (windows.location != PAD).sum(axis=1)
    valid = np.arange(windows.location.shape[1]) < lengths[:, None]
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    columns = {"city": pa.array(windows.city.astype(np.int32))}
    for name, dtype in WINDOW_COLUMNS.items():
        columns[name] = pa.ListArray.from_arrays(offsets, pa.array(getattr(windows, name)[valid].astype(dtype)))
    return pa.table(columns)


class _CityWriters:
    """Parquet files of one split, one per city, filled in row groups of ``rows_per_group``
    windows (windows wait in memory until a group is full)."""

    def __init__(self, folder, rows_per_group):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows_per_group = rows_per_group
        self.writers, self.pending = {}, {}

    def add(self, city, table):
        import pyarrow as pa

        parts = self.pending.setdefault(city, [])
        parts.append(table)
        table = pa.concat_tables(parts)
        while len(table) >= self.rows_per_group:
            self._write(city, table.slice(0, self.rows_per_group))
            table = table.slice(self.rows_per_group)
        self.pending[city] = [table] if len(table) else []

    def _write(self, city, table):
        import pyarrow.parquet as pq

        if city not in self.writers:
            self.writers[city] = pq.ParquetWriter(self.folder / f"city-{city:04d}.parquet", table.schema,
                                                  compression="zstd")
        self.writers[city].write_table(table, row_group_size=self.rows_per_group)

    def close(self):
        import pyarrow as pa

        for city, parts in self.pending.items():
            if parts:
                self._write(city, pa.concat_tables(parts))
        for writer in self.writers.values():
            writer.close()
        return sorted(f"city-{city:04d}.parquet" for city in self.writers)


def write_windows(model, chunks, path, pois=None, rows_per_group=65_536):
    """Build a model's encoder by chunks and write its training windows to Parquet, once.

    First pass: :class:`ChunkedEncoder` over the chunks (the model's ``encoder`` template);
    the model gets the result as ``encoder_``. Second pass: each chunk's training windows
    (sliding, ``stride_days``) and validation windows (non-overlapping, of a
    ``validation_fraction`` share of the chunk's users per city, drawn with ``random_state``),
    exactly as ``fit`` makes them, shuffled within the chunk (``random_state``) and appended to
    ``<path>/train/city-<i>.parquet`` and ``<path>/valid/city-<i>.parquet``.

    Parameters
    ----------
    model : NeuralNextLocationEstimator
        E.g. :class:`~trajmoe.TrajMoERegressor`; its window parameters (``window_days``,
        ``stride_days``, ``max_tokens``, ``min_stays``, ``validation_fraction``,
        ``random_state``, ``city_tz``) shape the windows and are recorded in the store.
    chunks : iterable of DataFrame
        Visit frames, each holding all the visits of its users; iterated TWICE, so a list, or
        an object whose ``__iter__`` reads the chunks anew (from files) each time.
    path : str or path-like
        Folder of the store (created; an earlier store there is replaced once the new one is
        written).
    pois : DataFrame, optional
        POI frame of the cities (see :class:`~trajmoe.SpatialSemanticEncoder`).
    rows_per_group : int, default 65536
        Windows per Parquet row group: the unit that training reads at once.

    Returns
    -------
    WindowStore

    Raises
    ------
    ValueError
        If ``chunks`` is empty, a user appears in two chunks, or no chunk has a training window
        (a chunk of short trajectories only adds none, as its users add none to one ``fit``);
        if ``rows_per_group`` is not an int >= 1; if ``model`` is fitted (has a network). The
        model and an earlier store in ``path`` are then left as they were (the store is written
        beside it first).
    NotADirectoryError
        If ``path`` is a file.
    TypeError
        If ``chunks`` is an iterator (a generator, ``iter(list)``): it can be read only once.

    Notes
    -----
    Which users are held out depends on how the data is cut into chunks (a share of each
    chunk's users), not on anything else; ``fit`` on the whole frame draws its own share.
    Disk: about 7 bytes per token before compression (int32 location, three int8 time
    features), and a visit is a token of up to ``window_days / stride_days`` windows.
    """
    import pyarrow  # noqa: F401  (a clear ImportError before any work: pip install pyarrow)

    model._check_params()
    if hasattr(model, "net_"):
        raise ValueError(
            f"model is a fitted {type(model).__name__} (its network was trained on the cities "
            f"{list(model.cities_)}): write_windows builds a new encoder, whose cells the network does "
            "not know. Pass an unfitted model (sklearn.base.clone(model) has the same parameters).")
    if iter(chunks) is chunks:
        raise TypeError("chunks is an iterator (a generator?), which can be read only once, and write_windows "
                        "reads the chunks twice (the encoder, then the windows): pass a list of frames, or an "
                        "object whose __iter__ reads them anew (from files).")
    if isinstance(rows_per_group, bool) or not isinstance(rows_per_group, numbers.Integral) or rows_per_group < 1:
        raise ValueError(f"rows_per_group must be an int >= 1 (windows per Parquet row group), got {rows_per_group!r}.")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"write_windows writes a folder of files, and {path} is a file: give a folder "
                                 "path.")
    path.mkdir(parents=True, exist_ok=True)
    with model._atomic_update():                 # a failed write leaves the model as it was
        chunked = ChunkedEncoder(model.encoder)
        n_chunks = 0
        for n_chunks, chunk in enumerate(chunks, start=1):
            try:
                chunked.partial_fit(chunk, pois=pois if n_chunks == 1 else None)
            except SchemaError as exc:           # which of the chunks
                raise SchemaError(f"chunk {n_chunks} of chunks: {exc}") from None
            model._record_times(chunk)           # each city's time zone and form, as fit records them
        if not n_chunks:
            raise ValueError("chunks holds no visit frame: pass at least one.")
        model.encoder_ = chunked.encoder_
        model.cities_ = list(model.encoder_.cities_)
        # written beside the store first: a failed write leaves an earlier store there as it was
        draft = Path(tempfile.mkdtemp(prefix=f".{path.name}-draft-", dir=path.parent))
        try:
            _write_store(model, chunks, draft, int(rows_per_group))
            for name in STORE_FILES:
                old = path / name
                if old.is_dir():
                    shutil.rmtree(old)
                elif old.exists():
                    old.unlink()
                (draft / name).rename(old)
        finally:
            shutil.rmtree(draft, ignore_errors=True)
        return WindowStore(path)


def _write_store(model, chunks, path, rows_per_group):
    """The second pass of :func:`write_windows`, with the model's ``encoder_`` set: the files of
    :data:`STORE_FILES` in ``path``."""
    writers = {split: _CityWriters(path / split, rows_per_group) for split in ("train", "valid")}
    counts = {split: np.zeros(len(model.cities_), np.int64) for split in writers}
    tokens = {split: np.zeros(len(model.cities_), np.int64) for split in writers}
    rng = np.random.default_rng(model.random_state)
    has_target = False
    for chunk in chunks:
        # a chunk of short trajectories only adds no window, as its users add none to one fit
        train, valid = model._training_windows(chunk, holdout=True, require=False)
        has_target = has_target or bool(((train.row >= 0).sum(axis=1) >= 2).any())
        for split, windows in (("train", train), ("valid", valid)):
            if windows is None:
                continue
            windows = windows.subset(rng.permutation(len(windows)))
            for c in np.unique(windows.city):
                part = windows.subset(windows.city == c)
                writers[split].add(int(c), _arrow_table(part))
                counts[split][c] += len(part)
                tokens[split][c] += int((part.location != PAD).sum())
    model._check_training_windows(int(counts["train"].sum()), has_target,
                                  bool(model.validation_fraction) and model.validation_split == "time")
    files = {split: writer.close() for split, writer in writers.items()}
    with open(path / "encoder.pkl", "wb") as fh:
        pickle.dump(model.encoder_, fh)
    meta = {"format": STORE_FORMAT, "cities": model.cities_,
            "n_locations": [int(model.encoder_.cities_[c].n_locations) for c in model.cities_],
            "params": {name: json_data(getattr(model, name)) for name in WINDOW_PARAMS},
            "windows": {split: counts[split].tolist() for split in counts},
            "tokens": {split: tokens[split].tolist() for split in tokens}, "files": files,
            "time_zones": getattr(model, "time_zones_", None), "time_forms": getattr(model, "time_forms_", None)}
    (path / "store.json").write_text(json.dumps(meta, indent=1))


class WindowStore:
    """Windows written by :func:`write_windows`: the encoder, the window parameters and the
    Parquet files of the training and validation windows.

    Parameters
    ----------
    path : str or path-like
        The store's folder.

    Attributes
    ----------
    path : Path
    meta : dict
        ``store.json``: ``cities``, ``n_locations`` (per city), ``params`` (the window
        parameters), ``windows`` and ``tokens`` (per split and city), ``files`` (per split),
        ``time_zones`` and ``time_forms`` (what the model's ``time_zones_`` and ``time_forms_``
        become when it trains on the store; absent from stores of earlier versions).

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no ``store.json``.
    ValueError
        If ``store.json`` is not one :func:`write_windows` wrote (not JSON, or a key missing).
    """

    #: The keys of ``store.json`` (:func:`write_windows`).
    _KEYS = ("format", "cities", "n_locations", "params", "windows", "tokens", "files")

    def __init__(self, path):
        self.path = Path(path)
        meta = self.path / "store.json"
        if not meta.is_file():
            raise FileNotFoundError(f"{meta} not found: write the store with trajmoe.streaming.write_windows first.")
        try:
            self.meta = json.loads(meta.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta} is not JSON ({exc}): write the store again with write_windows.") from None
        missing = [key for key in self._KEYS if not isinstance(self.meta, dict) or key not in self.meta]
        if missing:
            raise ValueError(f"{meta} lacks {missing}: it was changed, or not written by write_windows; write the "
                             "store again.")

    @property
    def encoder(self):
        """The fitted :class:`~trajmoe.SpatialSemanticEncoder` (unpickled; write stores
        yourself, or trust where they come from)."""
        with open(self.path / "encoder.pkl", "rb") as fh:
            return pickle.load(fh)

    def windows(self, split="train"):
        """A dataset of one split's windows (:class:`trajmoe.nn.shards.ParquetWindows`), or
        None when the split has none.

        Parameters
        ----------
        split : {"train", "valid"}
        """
        from .nn.shards import ParquetWindows

        if split not in ("train", "valid"):
            raise ValueError(f"split must be 'train' or 'valid', got {split!r}.")
        if not sum(self.meta["windows"][split]):
            return None
        return ParquetWindows([self.path / split / f for f in self.meta["files"][split]],
                              np.asarray(self.meta["n_locations"], np.int64))

    def check_model(self, model):
        """Raise ValueError if ``model``'s window parameters differ from the store's (TypeError if
        it has none: not a next-location estimator)."""
        lacking = [k for k in self.meta["params"] if not hasattr(model, k)]
        if lacking:
            raise TypeError(f"{type(model).__name__} has no window parameters {lacking}: give the estimator the "
                            "store was written for (e.g. a TrajMoERegressor).")
        differ = {k: (getattr(model, k), v) for k, v in self.meta["params"].items()
                  if _jsonable(getattr(model, k)) != v}
        if differ:
            raise ValueError(f"The store's windows were made with other parameters (model, store): {differ}; "
                             "set them on the model or write the store again.")


def _jsonable(value):
    return json.loads(json.dumps(json_data(value)))
