"""Flickr photo-trail loader (Lim et al., IJCAI 2015): Edinburgh, Melbourne, Osaka, Toronto."""

from __future__ import annotations

import warnings

import pandas as pd
from sklearn.utils import Bunch

from ..schema import DataWarning, validate_pois, validate_visits
from ..taxonomy import map_categories
from ._home import data_file, read_csv

# city -> (file abbreviation, IANA time zone)
_CITIES = {
    "edinburgh": ("Edin", "Europe/London"),
    "melbourne": ("Melb", "Australia/Melbourne"),
    "osaka": ("Osak", "Asia/Tokyo"),
    "toronto": ("Toro", "America/Toronto"),
}
_REF = (
    "Lim, Chen, Leckie, Karunasekera, \"Personalized tour recommendation based on user "
    "interests and points of interest visit durations\", IJCAI 2015 (from YFCC100M)."
)


def load_flickr(city: str = "Edinburgh", data_home=None) -> Bunch:
    """Load the Flickr photo trails of one city (visits to POIs inferred from geotagged photos).

    Reads ``flickr_tours/traj-<Abbr>.csv`` and ``poi-<Abbr>.csv``; each visit row is joined
    with its POI for coordinates and category. Rows whose start or end time is before the year
    2000 (wrong camera clocks) are dropped with a :class:`~trajmoe.schema.DataWarning`
    (Edinburgh 33, Melbourne 0, Osaka 3, Toronto 93).

    Parameters
    ----------
    city : {"Edinburgh", "Melbourne", "Osaka", "Toronto"}, default "Edinburgh"
        Case-insensitive.
    data_home : str or path-like, default None
        Folder holding ``flickr_tours/`` (see :func:`get_data_home`).

    Returns
    -------
    data : sklearn.utils.Bunch
        - ``visits`` : DataFrame of shape (n_visits, 12), validated (sorted by user, time):
          ``user_id`` (str, Flickr NSID), ``trajectory_id`` (int64), ``poi_id`` (int64),
          ``lat``, ``lon`` (float64, WGS84 degrees, of the POI), ``started_at``,
          ``finished_at`` (datetime64, tz of the city: Europe/London, Australia/Melbourne,
          Asia/Tokyo, America/Toronto; first and last photo), ``n_photos`` (int64),
          ``duration_s`` (int64, seconds), ``poi_category`` (taxonomy name),
          ``source_category`` (Flickr name), ``city`` (lowercase, e.g. ``"edinburgh"``).
        - ``pois`` : DataFrame of shape (n_pois, 7): ``poi_id``, ``lat``, ``lon``,
          ``category``, ``source_category``, ``count`` (1), ``city``.
        - ``city`` : str, lowercase city name.
        - ``n_dropped`` : dict, ``{"before_2000": n}``.
        - ``description`` : str.

    Raises
    ------
    ValueError
        If ``city`` is unknown, or a visit refers to a POI absent from the POI table.
    FileNotFoundError
        If a file is missing; the message says where it looked and how to fix.

    Warns
    -----
    DataWarning
        When rows before the year 2000 are dropped, stating the count.

    References
    ----------
    .. [1] Lim, Chen, Leckie, Karunasekera, "Personalized tour recommendation based on user
       interests and points of interest visit durations", IJCAI 2015.
    .. [2] Thomee et al., "YFCC100M: The new data in multimedia research", Communications of
       the ACM 59(2), 2016.
    """
    key = str(city).lower()
    if key not in _CITIES:
        raise ValueError(
            f"unknown Flickr city {city!r}: use one of "
            f"{[k.capitalize() for k in _CITIES]}"
        )
    abbr, tz = _CITIES[key]
    poi_raw = read_csv(data_file(f"flickr_tours/poi-{abbr}.csv", data_home, "Flickr POIs"), "Flickr POIs")
    traj = read_csv(
        data_file(f"flickr_tours/traj-{abbr}.csv", data_home, "Flickr trajectories"), "Flickr trajectories",
        dtype={"userID": str},
    )
    # columns are read by name: the order of poiLat/poiLon differs between cities
    pois = pd.DataFrame(
        {
            "poi_id": poi_raw["poiID"].astype("int64"),
            "lat": poi_raw["poiLat"].astype("float64"),
            "lon": poi_raw["poiLon"].astype("float64"),
            "source_category": poi_raw["poiCat"].astype(str),
        }
    )
    pois["category"] = map_categories(pois["source_category"], "flickr")
    pois["count"] = 1
    pois["city"] = key
    unknown = ~traj["poiID"].isin(pois["poi_id"])
    if unknown.any():
        raise ValueError(
            f"flickr_tours/traj-{abbr}.csv: {int(unknown.sum())} rows refer to POIs absent from "
            f"poi-{abbr}.csv (ids {sorted(traj.loc[unknown, 'poiID'].unique())[:5]})"
        )
    start = pd.to_datetime(traj["startTime"], unit="s", utc=True).dt.tz_convert(tz)
    end = pd.to_datetime(traj["endTime"], unit="s", utc=True).dt.tz_convert(tz)
    bad = ((start.dt.year < 2000) | (end.dt.year < 2000)).to_numpy()
    n_bad = int(bad.sum())
    if n_bad:
        warnings.warn(
            f"Flickr {key.capitalize()}: dropped {n_bad} of {len(traj)} visits with a start or "
            f"end time before the year 2000 (wrong camera clocks)",
            DataWarning,
            stacklevel=2,
        )
    keep = ~bad
    lookup = pois.set_index("poi_id")
    pid = traj.loc[keep, "poiID"].astype("int64")
    visits = pd.DataFrame(
        {
            "user_id": traj.loc[keep, "userID"],
            "trajectory_id": traj.loc[keep, "trajID"].astype("int64"),
            "poi_id": pid,
            "lat": lookup["lat"].reindex(pid).to_numpy(),
            "lon": lookup["lon"].reindex(pid).to_numpy(),
            "started_at": start[keep],
            "finished_at": end[keep],
            "n_photos": traj.loc[keep, "#photo"].astype("int64"),
            "duration_s": traj.loc[keep, "poiDuration"].astype("int64"),
            "poi_category": lookup["category"].reindex(pid).to_numpy(),
            "source_category": lookup["source_category"].reindex(pid).to_numpy(),
            "city": key,
        }
    )
    return Bunch(
        visits=validate_visits(visits),
        pois=validate_pois(pois),
        city=key,
        n_dropped={"before_2000": n_bad},
        description=(
            f"Flickr photo trails of {key.capitalize()} (visits to {len(pois)} POIs inferred "
            f"from geotagged YFCC100M photos), local time {tz}; {n_bad} visits before the year "
            f"2000 dropped. Source: " + _REF
        ),
    )
