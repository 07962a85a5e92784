"""Loader of the location-feature tables and example windows released with TrajMoE/MoveGPT."""

from __future__ import annotations

import io
import warnings
import zipfile

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ..schema import DataWarning
from ..taxonomy import TAXONOMY
from ._home import data_file

# canonical name -> (vocab file stem, example text file stem)
_CITIES = {
    "Atlanta": ("Atlanta", "Atlanta"),
    "Chicago": ("Chicago", "Chicago"),
    "LosAngeles": ("LosAngeles", "LosAngeles"),
    "NewYork": ("NewYork", "NewYork"),
    "Seattle": ("Seattle", "Seattle"),
    "WashingtonDC": ("WashingtonDC", "Washington"),
}
_ALIASES = {k.lower(): k for k in _CITIES} | {"washington": "WashingtonDC"}
_SPLITS = ("train", "val", "test")
_N_FEATURES = 71


def _canonical_city(city: str) -> str:
    key = "".join(ch for ch in str(city).lower() if ch.isalnum())
    if key not in _ALIASES:
        raise ValueError(f"unknown MoveGPT city {city!r}: use one of {list(_CITIES)}")
    return _ALIASES[key]


def _parse_windows(text: str, split: str, first_window: int) -> list[tuple]:
    rows = []
    w = first_window
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        user, _, seq = line.partition(" ")
        for pos, item in enumerate(seq.strip().split(";")):
            if not item:
                continue
            loc, weekday, slot = item.split(",")
            rows.append((split, w, user, pos, int(loc), int(weekday), int(slot)))
        w += 1
    return rows


def load_movegpt(city: str, data_home=None) -> Bunch:
    """Load one city's location-feature table and example windows released with TrajMoE.

    Reads ``movegpt/vocab_<City>.npy`` and the city's text files inside
    ``movegpt/traj_dataset_example.zip`` (read in memory, never extracted).

    Parameters
    ----------
    city : {"Atlanta", "Chicago", "LosAngeles", "NewYork", "Seattle", "WashingtonDC"}
        Case, spaces and underscores are ignored (``"Los Angeles"`` works; ``"Washington"`` is
        an alias of ``"WashingtonDC"``).
    data_home : str or path-like, default None
        Folder holding ``movegpt/`` (see :func:`get_data_home`).

    Returns
    -------
    data : sklearn.utils.Bunch
        - ``features`` : ndarray of shape (n_locations, 71), float64; row i = location id i.
          Columns 0..33 raw POI counts per category of :data:`trajmoe.taxonomy.TAXONOMY` (in
          that order), 34..67 the same counts normalised to sum 1, 68..69 the cell centroid's
          coordinates z-scored within the city, 70 the popularity rank bin 1..8.
        - ``location_table`` : DataFrame of shape (n_locations, 37), index ``location_id``:
          the 34 raw counts (float64, columns named by the taxonomy), ``coord_0``, ``coord_1``
          (float64, the two z-scored coordinates in stored order), ``rank`` (int64, 1..8).
        - ``windows`` : DataFrame in long form, one row per visit of an example window, columns
          ``split`` (str ``"train"``/``"val"``/``"test"``), ``window`` (int64, window id,
          unique over splits), ``user_id`` (str, hashed user), ``position`` (int64, 0-based
          position in the window), ``location_id`` (int64, row of ``features``; -1 where the
          released id lies outside the feature table, which happens in Chicago: 73 ids per
          split, 219 in all), ``raw_location_id`` (int64, the id as released),
          ``weekday`` (int64, day of week as stored, 0..6), ``slot`` (int64, half-hour 0..47).
        - ``split`` : dict ``{split name: ndarray of window ids}``.
        - ``city`` : str, the canonical city name.
        - ``n_dropped`` : dict, ``{"out_of_vocabulary_location_ids": n}``: visits whose
          released location id is outside the feature table (kept, with ``location_id`` -1).
        - ``description`` : str.

    Raises
    ------
    ValueError
        If ``city`` is unknown, or the feature file does not have 71 columns.

    Warns
    -----
    DataWarning
        When example visits refer to location ids outside the feature table (Chicago: 219).
    FileNotFoundError
        If a file is missing; the message says where it looked and how to fix.

    References
    ----------
    .. [1] Han, Yuan, Chen, Ding, Li, "TrajMoE: Spatially-Aware Mixture of Experts for Unified
       Human Mobility Modeling", arXiv 2505.18670, 2025; v2 "MoveGPT: Scaling Mobility
       Foundation Models with Spatially-Aware Mixture of Experts" (reference code, MIT
       licence).
    """
    name = _canonical_city(city)
    vocab_stem, txt_stem = _CITIES[name]
    features = np.load(data_file(f"movegpt/vocab_{vocab_stem}.npy", data_home, "MoveGPT features"))
    if features.ndim != 2 or features.shape[1] != _N_FEATURES:
        raise ValueError(
            f"movegpt/vocab_{vocab_stem}.npy: expected shape (n_locations, {_N_FEATURES}), got "
            f"{features.shape}"
        )
    features = np.asarray(features, dtype="float64")
    n = features.shape[0]
    k = len(TAXONOMY)
    table = pd.DataFrame(features[:, :k], columns=list(TAXONOMY))
    table["coord_0"] = features[:, 2 * k]
    table["coord_1"] = features[:, 2 * k + 1]
    table["rank"] = np.rint(features[:, 2 * k + 2]).astype("int64")
    table.index.name = "location_id"

    zpath = data_file("movegpt/traj_dataset_example.zip", data_home, "MoveGPT example windows")
    rows: list[tuple] = []
    with zipfile.ZipFile(zpath) as zf:
        members = set(zf.namelist())
        for split in _SPLITS:
            member = f"traj_dataset_example/{split}/{txt_stem}.txt"
            if member not in members:
                continue
            with zf.open(member) as fh:
                text = io.TextIOWrapper(fh, encoding="utf-8").read()
            first = rows[-1][1] + 1 if rows else 0
            rows.extend(_parse_windows(text, split, first))
    windows = pd.DataFrame(
        rows,
        columns=["split", "window", "user_id", "position", "location_id", "weekday", "slot"],
    ).astype({c: "int64" for c in ("window", "position", "location_id", "weekday", "slot")})
    windows["raw_location_id"] = windows["location_id"]
    bad = ((windows["location_id"] < 0) | (windows["location_id"] >= n)).to_numpy()
    n_bad = int(bad.sum())
    if n_bad:
        warnings.warn(
            f"MoveGPT {name}: {n_bad} of {len(windows)} example visits refer to location ids "
            f"outside 0..{n - 1} of vocab_{vocab_stem}.npy (ids "
            f"{sorted(windows.loc[bad, 'location_id'].unique().tolist())[:5]}...); their "
            f"location_id is set to -1 (out of vocabulary), raw_location_id keeps the raw id",
            DataWarning,
            stacklevel=2,
        )
        windows.loc[bad, "location_id"] = -1
    split = {
        s: np.unique(windows.loc[windows["split"] == s, "window"].to_numpy())
        for s in _SPLITS
        if (windows["split"] == s).any()
    }
    return Bunch(
        features=features,
        location_table=table,
        windows=windows,
        split=split,
        city=name,
        n_dropped={"out_of_vocabulary_location_ids": n_bad},
        description=(
            f"TrajMoE/MoveGPT released location features of {name}: {n} locations x 71 "
            "(34 raw POI counts over the 34-category taxonomy, 34 normalised, 2 z-scored "
            "coordinates, popularity rank 1..8), plus the example windows "
            "(`user_hash loc,weekday,slot;...`) of the train/val/test splits. MIT licence. "
            "Source: Han et al., TrajMoE / MoveGPT, arXiv 2505.18670, 2025."
        ),
    )
