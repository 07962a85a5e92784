"""YJMob100K loader (HuMob challenge 2024): gridded trajectories of city A, POI counts of A-D."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ..schema import validate_pois, validate_visits
from ..taxonomy import map_categories
from ._home import data_file, read_csv

_CITIES = ("A", "B", "C", "D")
_REF = (
    "Yabe, Tsubouchi, Shimizu, Sekimoto, Sezaki, Moro, Pentland, \"YJMob100K: City-scale and "
    "longitudinal dataset of anonymized human mobility trajectories\", Scientific Data 11, 397, "
    "2024."
)


def _category_names(data_home) -> list[str]:
    path = data_file("yjmob100k/POI_datacategories.csv", data_home, "YJMob100K category names")
    with open(path, encoding="utf-8-sig") as f:  # the file starts with a byte-order mark
        return [line.strip() for line in f if line.strip()]


def load_yjmob100k(city: str = "A", data_home=None) -> Bunch:
    """Load YJMob100K: gridded trajectories (city A only) and POI counts per cell.

    The cities are anonymised metropolitan areas of Japan on a 200 x 200 grid of 500 m cells;
    no coordinates or calendar dates are published, so the grid IS the location and the day
    index the date.

    Parameters
    ----------
    city : {"A", "B", "C", "D"}, default "A"
        Which city. Trajectories are shipped for city A only (the first 100 records of each
        of 1,000 users, uids 26 to 99,743); for B-D ``visits`` is None.
    data_home : str or path-like, default None
        Folder holding ``yjmob100k/`` (see :func:`get_data_home`).

    Returns
    -------
    data : sklearn.utils.Bunch
        - ``visits`` : DataFrame of shape (100000, 6) for city A, else None. Validated (sorted
          by user, day, slot), one row per record: ``user_id`` (int64), ``day`` (int64, day
          index, 0..74 in the full data, 0..39 in this slice; the weekday of day 0 is
          unknown), ``slot`` (int64, half-hour 0..47),
          ``x``, ``y`` (int64, grid cell 1..200), ``city`` (``"yjmob_A"``).
        - ``pois`` : DataFrame of shape (n_cell_categories, 6): ``x``, ``y`` (int64),
          ``category`` (taxonomy name), ``source_category`` (one of the 85 YJMob names),
          ``count`` (int64, number of POIs of that category in the cell, ``POI_count``),
          ``city`` (``"yjmob_<city>"``).
        - ``city`` : str, ``"yjmob_<city>"``.
        - ``n_dropped`` : dict, ``{}`` (nothing is dropped).
        - ``description`` : str.

    Raises
    ------
    ValueError
        If ``city`` is not one of A-D.
    FileNotFoundError
        If a file is missing; the message says where it looked and how to fix.

    References
    ----------
    .. [1] Yabe et al., "YJMob100K: City-scale and longitudinal dataset of anonymized human
       mobility trajectories", Scientific Data 11, 397, 2024.
    """
    c = str(city).upper()
    if c not in _CITIES:
        raise ValueError(f"unknown YJMob100K city {city!r}: use one of {list(_CITIES)}")
    name = f"yjmob_{c}"
    visits = None
    if c == "A":
        path = data_file("yjmob100k/cityA_1k_users.csv", data_home, "YJMob100K trajectories")
        raw = read_csv(path, "YJMob100K trajectories", usecols=["uid", "d", "t", "x", "y"], dtype="int64")
        visits = validate_visits(
            pd.DataFrame(
                {
                    "user_id": raw["uid"],
                    "day": raw["d"],
                    "slot": raw["t"],
                    "x": raw["x"],
                    "y": raw["y"],
                    "city": name,
                }
            )
        )
    names = _category_names(data_home)
    path = data_file(f"yjmob100k/POIdata_city{c}.csv", data_home, "YJMob100K POI counts")
    raw = read_csv(path, "YJMob100K POIs", dtype="int64")
    idx = raw["category"].to_numpy()
    if idx.min() < 1 or idx.max() > len(names):
        raise ValueError(
            f"{path}: category indices must be 1..{len(names)} (1-based rows of "
            f"POI_datacategories.csv), found {idx.min()}..{idx.max()}"
        )
    source = pd.Series(np.asarray(names, dtype=object)[idx - 1], dtype="str")
    pois = validate_pois(
        pd.DataFrame(
            {
                "x": raw["x"],
                "y": raw["y"],
                "category": map_categories(source, "yjmob"),
                "source_category": source,
                "count": raw["POI_count"],
                "city": name,
            }
        )
    )
    return Bunch(
        visits=visits,
        pois=pois,
        city=name,
        n_dropped={},
        description=(
            f"YJMob100K city {c} (HuMob challenge 2024): "
            + (
                "trajectories of 1,000 users of city A, first 100 records each "
                "(100,000 records, day index 0..74, half-hour slots, 500 m grid cells 1..200); "
                if c == "A"
                else "no trajectories shipped for this city; "
            )
            + "POI counts per cell over 85 categories mapped onto the 34-category taxonomy. "
            "Source: " + _REF
        ),
    )
