"""Foursquare check-in loaders: New York (TSMC2014) and Singapore (Diff-POI splits)."""

from __future__ import annotations

import warnings

import pandas as pd
from sklearn.utils import Bunch

from ..schema import DataWarning, validate_pois, validate_visits
from ..taxonomy import map_categories
from ._home import data_file, read_csv

_NYC_REF = (
    "Yang, Zhang, Zheng, Yu, \"Modeling user activity preference by leveraging user spatial "
    "temporal characteristics in LBSNs\", IEEE Transactions on Systems, Man, and Cybernetics: "
    "Systems 45(1), 2015."
)
_SG_REF = (
    "Qin, Wu, Ju, Luo, Zhang, \"A Diffusion Model for POI Recommendation\" (Diff-POI), "
    "ACM TOIS, 2023; check-ins from Yang et al.'s global-scale Foursquare data (Yang, Qu, "
    "Yang, Cudre-Mauroux, \"Revisiting user mobility and social relationships in LBSNs: a "
    "hypergraph embedding approach\", WWW 2019)."
)


def load_foursquare_nyc(data_home=None) -> Bunch:
    """Load the Foursquare check-ins of New York City (TSMC2014, GETNext-style filtered).

    Reads ``foursquare_nyc/checkins.csv.gz`` under the data home (nothing is written or cached).

    Parameters
    ----------
    data_home : str or path-like, default None
        Folder holding ``foursquare_nyc/``; default ``$TRAJMOE_DATA``, else ``~/trajmoe_data``
        (see :func:`get_data_home`).

    Returns
    -------
    data : sklearn.utils.Bunch
        - ``visits`` : DataFrame of shape (113344, 11), validated (sorted by user, time), one
          row per check-in, columns ``user_id`` (int64), ``venue_id`` (int64), ``lat``,
          ``lon`` (float64, WGS84 degrees), ``started_at`` (datetime64, tz America/New_York,
          converted from the UTC ``unix_s``), ``poi_category`` (taxonomy name),
          ``source_category`` (Foursquare name, 205 of them), ``trajectory_id`` (str, cut at
          24 h gaps), ``block`` (str ``T0``..``T5``, chronological blocks), ``city``
          (``"nyc"``). 1,082 users, 4,988 venues, April 2012 - February 2013.
        - ``pois`` : DataFrame of shape (4988, 7), one row per venue: ``venue_id``, ``lat``,
          ``lon`` (the median of its check-in coordinates, which vary slightly), ``category``
          and ``source_category`` (its most frequent category), ``count`` (1), ``city``. The
          venues of every user's check-ins, held-out users' included: to score users without
          knowing where they went, keep the venues of the training users only
          (``pois[pois["venue_id"].isin(train["venue_id"])]``).
        - ``city`` : str, ``"nyc"``.
        - ``n_dropped`` : dict, ``{}`` (nothing is dropped).
        - ``description`` : str.

    Raises
    ------
    FileNotFoundError
        If the file is missing; the message says where it looked and how to fix.

    References
    ----------
    .. [1] Yang, Zhang, Zheng, Yu, "Modeling user activity preference by leveraging user
       spatial temporal characteristics in LBSNs", IEEE TSMC 45(1), 2015.
    .. [2] Yang, Liu, Zhao, "GETNext: Trajectory flow map enhanced transformer for next POI
       recommendation", SIGIR 2022 (the filtering).
    """
    path = data_file("foursquare_nyc/checkins.csv.gz", data_home, "Foursquare NYC check-ins")
    raw = read_csv(
        path, "Foursquare check-ins",
        dtype={
            "user_idx": "int64",
            "poi_idx": "int64",
            "cat": str,
            "lat": "float64",
            "lon": "float64",
            "unix_s": "int64",
            "traj_id": str,
            "block": str,
        },
        usecols=["user_idx", "poi_idx", "cat", "lat", "lon", "unix_s", "traj_id", "block"],
    )
    visits = pd.DataFrame(
        {
            "user_id": raw["user_idx"],
            "venue_id": raw["poi_idx"],
            "lat": raw["lat"],
            "lon": raw["lon"],
            "started_at": pd.to_datetime(raw["unix_s"], unit="s", utc=True).dt.tz_convert(
                "America/New_York"
            ),
            "poi_category": map_categories(raw["cat"], "foursquare"),
            "source_category": raw["cat"],
            "trajectory_id": raw["traj_id"],
            "block": raw["block"],
            "city": "nyc",
        }
    )
    visits = validate_visits(visits)

    # venues: coordinates vary slightly between check-ins; take the median and the most
    # frequent category (ties: alphabetical)
    counts = (
        raw.groupby(["poi_idx", "cat"], sort=True).size().rename("n").reset_index()
        .sort_values(["poi_idx", "n"], ascending=[True, False], kind="stable")
    )
    top = counts.drop_duplicates("poi_idx").set_index("poi_idx")["cat"]
    coords = raw.groupby("poi_idx")[["lat", "lon"]].median()
    pois = pd.DataFrame(
        {
            "venue_id": coords.index.to_numpy(),
            "lat": coords["lat"].to_numpy(),
            "lon": coords["lon"].to_numpy(),
            "source_category": top.reindex(coords.index).to_numpy(),
        }
    )
    pois["category"] = map_categories(pois["source_category"], "foursquare")
    pois["count"] = 1
    pois["city"] = "nyc"
    pois = validate_pois(pois)
    return Bunch(
        visits=visits,
        pois=pois,
        city="nyc",
        n_dropped={},
        description=(
            "Foursquare check-ins of New York City, April 2012 - February 2013 (TSMC2014), "
            "filtered GETNext-style (users and venues with >= 10 check-ins): 113,344 "
            "check-ins of 1,082 users at 4,988 venues, 205 Foursquare categories mapped onto "
            "the 34-category taxonomy. Times are local (America/New_York). Source: " + _NYC_REF
        ),
    )


def load_foursquare_singapore(data_home=None) -> Bunch:
    """Load the Foursquare check-ins of Singapore (the Diff-POI test and tune splits combined).

    Reads ``foursquare_singapore/test.txt`` and ``tune.txt`` (tab-separated, no header: user,
    venue, ``"lat,lon"``, local time ``HH:MM``, day index). Both splits sample the same users;
    they are concatenated (42,519 rows) and the 267 exact duplicate rows are dropped with a
    :class:`~trajmoe.schema.DataWarning`.

    Parameters
    ----------
    data_home : str or path-like, default None
        Folder holding ``foursquare_singapore/`` (see :func:`get_data_home`).

    Returns
    -------
    data : sklearn.utils.Bunch
        - ``visits`` : DataFrame of shape (42252, 9), validated (sorted by user, day, slot):
          ``user_id`` (str, e.g. ``"USER_1675"``), ``venue_id`` (str, e.g. ``"LOC_1967"``),
          ``lat``, ``lon`` (float64, WGS84 degrees), ``day`` (int64, day index 0..377 from
          the start of the collection; no calendar date), ``slot`` (int64, half-hour of the
          local time of day, ``hour * 2 + minute // 30``, 0..47), ``time_of_day`` (str, the raw
          local ``HH:MM``), ``split`` (str, ``"test"``
          or ``"tune"``, the file of origin), ``city`` (``"singapore"``).
        - ``pois`` : None (the data carry no venue categories).
        - ``city`` : str, ``"singapore"``.
        - ``n_dropped`` : dict, ``{"duplicate_rows": 267}``.
        - ``description`` : str.

    Raises
    ------
    FileNotFoundError
        If a file is missing; the message says where it looked and how to fix.

    Warns
    -----
    DataWarning
        Stating the number of exact duplicate rows dropped (267).

    References
    ----------
    .. [1] Qin, Wu, Ju, Luo, Zhang, "A Diffusion Model for POI Recommendation" (Diff-POI),
       ACM TOIS, 2023.
    .. [2] Yang, Qu, Yang, Cudre-Mauroux, "Revisiting user mobility and social relationships in LBSNs: a
       hypergraph embedding approach", WWW 2019 (the global Foursquare
       check-ins).
    """
    frames = []
    for split in ("test", "tune"):
        path = data_file(f"foursquare_singapore/{split}.txt", data_home, "Foursquare Singapore")
        f = read_csv(
            path, "Foursquare check-ins",
            sep="\t",
            header=None,
            names=["user_id", "venue_id", "latlon", "time", "day"],
            dtype={"user_id": str, "venue_id": str, "latlon": str, "time": str, "day": "int64"},
        )
        f["split"] = split
        frames.append(f)
    raw = pd.concat(frames, ignore_index=True)
    dup = raw.duplicated(subset=["user_id", "venue_id", "latlon", "time", "day"]).to_numpy()
    n_dup = int(dup.sum())
    if n_dup:
        warnings.warn(
            f"Foursquare Singapore: dropped {n_dup} exact duplicate rows of {len(raw)} "
            f"(test.txt + tune.txt); the first occurrence is kept",
            DataWarning,
            stacklevel=2,
        )
        raw = raw.loc[~dup]
    latlon = raw["latlon"].str.split(",", n=1, expand=True)
    hhmm = raw["time"].str.split(":", n=1, expand=True)
    hour = hhmm[0].astype("int64")
    minute = hhmm[1].astype("int64")
    visits = pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "venue_id": raw["venue_id"],
            "lat": latlon[0].astype("float64"),
            "lon": latlon[1].astype("float64"),
            "day": raw["day"],
            "slot": hour * 2 + minute // 30,
            "time_of_day": raw["time"],
            "split": raw["split"],
            "city": "singapore",
        }
    )
    visits = validate_visits(visits)
    return Bunch(
        visits=visits,
        pois=None,
        city="singapore",
        n_dropped={"duplicate_rows": n_dup},
        description=(
            "Foursquare check-ins of Singapore, the test and tune splits published with "
            "Diff-POI combined (31,741 + 10,778 rows; the training split is not available), "
            f"{n_dup} exact duplicate rows dropped. Time is binned: day index 0..377 and "
            "half-hour slot of the local time of day; no venue categories. Source: " + _SG_REF
        ),
    )
