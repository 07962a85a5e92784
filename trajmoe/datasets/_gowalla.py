"""Gowalla check-in loader: California and Nevada (SNAP Gowalla, STHGCN Gowalla-CA), by metro."""

from __future__ import annotations

import ast
import re

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ..schema import validate_pois, validate_visits
from ..taxonomy import map_categories
from ._home import data_file, read_csv

_REF = (
    "Cho, Myers, Leskovec, \"Friendship and mobility: user movement in location-based social "
    "networks\", KDD 2011 (SNAP Gowalla); preprocessing of Yan, Song, Jiao, He, Wang, Li, Chu, "
    "\"Spatio-temporal hypergraph learning for next POI recommendation\" (STHGCN), SIGIR 2023, "
    "with the spot categories of Liu et al. (IRenMF, CIKM 2014)."
)
_TZ = "America/Los_Angeles"  # Pacific time: every box, Las Vegas included (UTC-7 in 2010-08..10)
_PREFIX = "gowalla_"

#: Fixed metro boxes, ``metro -> (lat_min, lat_max, lon_min, lon_max)`` in WGS84 degrees,
#: half-open (``lat_min <= lat < lat_max`` and ``lon_min <= lon < lon_max``), disjoint.
#: Chosen from a 0.1-degree histogram of the check-ins so that each box holds one cluster whole.
#: A check-in outside every box belongs to ``"other"``.
METRO_BOXES: dict[str, tuple[float, float, float, float]] = {
    "bay_area": (37.0, 38.5, -123.1, -121.6),
    "los_angeles": (33.4, 34.5, -119.0, -116.8),
    "las_vegas": (35.8, 36.5, -115.5, -114.6),
    "san_diego": (32.5, 33.4, -117.6, -116.6),
    "sacramento": (38.3, 39.0, -121.6, -120.9),
}
OTHER = "other"
_STATE = "ca"

# 'name': '...' or 'name': "..." (a Python literal: names with an apostrophe use double quotes)
_NAME = re.compile(r"""'name':\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_URL = re.compile(r"""'url':\s*'([^']*)'""")
# Gowalla gives the name "Subway" to two categories: the transit one keeps it
_RENAMED = {("/categories/454", "Subway"): "Subway (sandwich chain)"}
_MISSING = "dummy"  # the preprocessing's placeholder for a spot without category


def _parse_category(text: str):
    """Gowalla name of one raw ``POI_catname`` value, trimmed; None for the placeholder."""
    text = str(text).strip()
    if text == _MISSING:
        return None
    names = _NAME.findall(text)
    if not names:
        raise ValueError(
            f"gowalla_ca/checkins.csv.gz: cannot parse the POI_catname value {text!r}: expected "
            f"\"[{{'url': '/categories/<id>'; 'name': '<name>'}}]\" or {_MISSING!r}"
        )
    name = ast.literal_eval(names[0]).strip()  # the first entry (every row has one)
    urls = _URL.findall(text)
    return _RENAMED.get((urls[0] if urls else None, name), name)


def metro_of(lat, lon) -> np.ndarray:
    """Metro of each point by the fixed boxes of :data:`METRO_BOXES`, else ``"other"``.

    Parameters
    ----------
    lat, lon : array-like of float of shape (n,)
        WGS84 degrees.

    Returns
    -------
    metro : ndarray of str of shape (n,)
        A key of :data:`METRO_BOXES` (the box holding the point; boxes are disjoint and
        half-open) or ``"other"``.

    Examples
    --------
    >>> from trajmoe.datasets._gowalla import metro_of
    >>> lat = [37.7749, 34.0522, 36.1699, 36.6002]      # San Francisco, LA, Las Vegas, Monterey
    >>> lon = [-122.4194, -118.2437, -115.1398, -121.8947]
    >>> metro_of(lat, lon).tolist()
    ['bay_area', 'los_angeles', 'las_vegas', 'other']
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    out = np.full(lat.shape, OTHER, dtype=object)
    for name, (lat0, lat1, lon0, lon1) in METRO_BOXES.items():
        inside = (lat >= lat0) & (lat < lat1) & (lon >= lon0) & (lon < lon1)
        out[inside] = name
    return out


def _metro_key(metro) -> str:
    key = str(metro).strip().lower()
    if key.startswith(_PREFIX):
        key = key[len(_PREFIX):]
    valid = [*METRO_BOXES, OTHER]
    if key not in valid:
        raise ValueError(
            f"unknown Gowalla metro {metro!r}: use one of {valid} (or None for every check-in)"
        )
    return key


def _boxes_frame() -> pd.DataFrame:
    rows = [(m, _PREFIX + m, *box) for m, box in METRO_BOXES.items()]
    return pd.DataFrame(rows, columns=["metro", "city", "lat_min", "lat_max", "lon_min", "lon_max"])


def load_gowalla_ca(metro=None, data_home=None, *, split_metros=True) -> Bunch:
    """Load the Gowalla check-ins of California and Nevada, one city per metro area.

    Reads ``gowalla_ca/checkins.csv.gz`` under the data home (nothing is written or cached):
    the validation and test splits of the STHGCN preprocessing of the SNAP Gowalla check-ins
    (the training split is not published), 48,104 check-ins of 1,704 users at 7,967 spots,
    2010-08-24 - 2010-10-22. The region spans several metro areas hundreds of km apart; each
    check-in is assigned to the fixed box of :data:`METRO_BOXES` that holds its coordinates
    (see Notes), and each metro is one city ``"gowalla_<metro>"``. Check-ins outside every box
    are KEPT, as the city ``"gowalla_other"``: nothing is dropped.

    Parameters
    ----------
    metro : str or None, default None
        None: every check-in, each with the city of its metro. A name, one of ``"bay_area"``,
        ``"los_angeles"``, ``"las_vegas"``, ``"san_diego"``, ``"sacramento"`` or ``"other"``
        (case-insensitive, with or without the ``"gowalla_"`` prefix): that metro's check-ins
        and spots only.
    data_home : str or path-like, default None
        Folder holding ``gowalla_ca/``; default ``$TRAJMOE_DATA``, else ``~/trajmoe_data``
        (see :func:`get_data_home`).
    split_metros : bool, default True
        False: the whole region as ONE city, ``"gowalla_ca"`` (``metro`` must then be None).

    Returns
    -------
    data : sklearn.utils.Bunch
        - ``visits`` : DataFrame of shape (48104, 10) for ``metro=None``, validated (sorted by
          city, user, time), one row per check-in: ``user_id`` (int64, SNAP user id),
          ``venue_id`` (int64, Gowalla spot id), ``lat``, ``lon`` (float64, WGS84 degrees, of
          the check-in), ``started_at`` (datetime64, tz America/Los_Angeles, converted from the
          UTC ``UTC_time``; Pacific daylight time, UTC-7, throughout), ``poi_category``
          (taxonomy name, NaN for 752 check-ins: 731 without a Gowalla category and 21 at
          ``"Farm"`` spots, which the ``"gowalla"`` table leaves unmapped), ``source_category``
          (str, the parsed and trimmed Gowalla name, e.g. ``"Other - Food"``; NaN where the raw
          file says ``dummy``), ``source_category_code`` (int64, the preprocessing's category
          code 0..300, one per raw ``POI_catname``), ``trajectory_id`` (str,
          ``"<user_id>_<k>"``, the preprocessing's trajectories: one ends only at a gap of 24 h
          or more), ``city`` (str, ``"gowalla_<metro>"``, ``"gowalla_other"`` or
          ``"gowalla_ca"``).
        - ``pois`` : DataFrame of shape (7806, 7) for ``metro=None``, one row per spot with a
          mapped category: ``venue_id``, ``lat``, ``lon`` (the median of its check-in
          coordinates, which vary slightly), ``category``, ``source_category``, ``count`` (1),
          ``city`` (the city of its check-ins). Spots without a category are in ``visits``
          only. The spots of every user's check-ins, held-out users' included: to score users
          without knowing where they went, keep the spots of the training users only
          (``pois[pois["venue_id"].isin(train["venue_id"])]``).
        - ``city`` : str, ``"gowalla_<metro>"`` when ``metro`` is given, else ``"gowalla_ca"``.
        - ``cities`` : tuple of str, the cities of ``visits`` in the order of
          :data:`METRO_BOXES`, ``"gowalla_other"`` last.
        - ``metro_boxes`` : DataFrame of shape (5, 6), the boxes: ``metro``, ``city``,
          ``lat_min``, ``lat_max``, ``lon_min``, ``lon_max`` (degrees, half-open).
        - ``n_dropped`` : dict, ``{}`` (nothing is dropped).
        - ``description`` : str.

    Raises
    ------
    ValueError
        If ``metro`` is unknown, if ``metro`` is given with ``split_metros=False``, or if a
        ``POI_catname`` value cannot be parsed.
    FileNotFoundError
        If the file is missing; the message says where it looked and how to fix.

    Warns
    -----
    DataWarning
        From :func:`trajmoe.taxonomy.map_categories`, listing the Gowalla names that the
        ``"gowalla"`` table leaves unmapped: ``"Farm"``, 21 check-ins (18 in Las Vegas, 3 in
        ``gowalla_other``), whenever the selection holds them.

    Notes
    -----
    Metro boxes (degrees, ``min <= value < max``) and what they hold, measured on this file
    (users and spots are counted within each city; 506 of the 1,704 users check in in more
    than one city, so the users of the cities add up to more than 1,704):

    =================== ============= ================= ========= ===== =====
    city                latitude      longitude         check-ins users spots
    =================== ============= ================= ========= ===== =====
    gowalla_bay_area    37.0 - 38.5   -123.1 - -121.6      24,480   948 4,359
    gowalla_los_angeles 33.4 - 34.5   -119.0 - -116.8      12,417   678 2,107
    gowalla_las_vegas   35.8 - 36.5   -115.5 - -114.6       6,719   352   745
    gowalla_san_diego   32.5 - 33.4   -117.6 - -116.6       2,755   154   416
    gowalla_sacramento  38.3 - 39.0   -121.6 - -120.9         673    48   141
    gowalla_other       outside every box                   1,060   179   199
    =================== ============= ================= ========= ===== =====

    ``gowalla_other`` gathers the rest of California (Monterey, Santa Cruz, Fresno, Palm
    Springs, Bakersfield, Santa Barbara, ...) and a few points in Nevada (Reno, Lake Tahoe,
    Primm); it is not a metro. The STHGCN "Gowalla-CA" region covers California and Nevada;
    Las Vegas shares the Pacific time zone, so times are converted from UTC to
    America/Los_Angeles, the local wall-clock time of every box.

    References
    ----------
    .. [1] Cho, Myers, Leskovec, "Friendship and mobility: user movement in location-based
       social networks", KDD 2011 (the SNAP Gowalla check-ins).
    .. [2] Yan, Song, Jiao, He, Wang, Li, Chu, "Spatio-temporal hypergraph learning for next
       POI recommendation" (STHGCN), SIGIR 2023 (the Gowalla-CA preprocessing: California and
       Nevada; spot categories from Liu, Wei, Sun, Miao, "Exploiting geographical
       neighborhood characteristics for location recommendation", CIKM 2014).
    """
    if metro is not None and not split_metros:
        raise ValueError(
            f"metro={metro!r} selects one metro; split_metros=False makes the whole region one "
            f"city: pass one or the other"
        )
    key = None if metro is None else _metro_key(metro)
    path = data_file("gowalla_ca/checkins.csv.gz", data_home, "Gowalla California check-ins")
    raw = read_csv(
        path, "Gowalla check-ins",
        usecols=["user_id", "POI_id", "POI_catid_code", "POI_catname", "latitude", "longitude",
                 "UTC_time", "trajectory_id"],
        dtype={"user_id": "int64", "POI_id": "int64", "POI_catid_code": "int64",
               "POI_catname": str, "latitude": "float64", "longitude": "float64",
               "UTC_time": str, "trajectory_id": str},
    )
    names = {text: _parse_category(text) for text in raw["POI_catname"].unique()}
    # the raw column's dtype (str on pandas 3, object before); the placeholder becomes missing
    source = raw["POI_catname"].map(names).astype(raw["POI_catname"].dtype)
    if split_metros:
        metros = metro_of(raw["latitude"].to_numpy(), raw["longitude"].to_numpy())
        # a spot belongs to the metro of its median coordinates (its check-ins agree)
        coords = raw.groupby("POI_id")[["latitude", "longitude"]].median()
        spot_metro = pd.Series(metro_of(coords["latitude"], coords["longitude"]), coords.index)
        if not np.array_equal(spot_metro.reindex(raw["POI_id"]).to_numpy(), metros):
            raise ValueError("gowalla_ca: a spot's check-ins fall into two metro boxes")
        city = pd.Series(_PREFIX + metros.astype(str), index=raw.index)
    else:
        city = pd.Series(_PREFIX + _STATE, index=raw.index)
    keep = np.ones(len(raw), bool) if key is None else (city == _PREFIX + key).to_numpy()
    raw, source, city = raw.loc[keep], source.loc[keep], city.loc[keep]
    named = source.notna()
    # placeholder rows are not names: only real names reach the unmapped report
    category = map_categories(source.loc[named], "gowalla").reindex(raw.index)
    visits = validate_visits(
        pd.DataFrame(
            {
                "user_id": raw["user_id"],
                "venue_id": raw["POI_id"],
                "lat": raw["latitude"],
                "lon": raw["longitude"],
                "started_at": pd.to_datetime(raw["UTC_time"], utc=True).dt.tz_convert(_TZ),
                "poi_category": category,
                "source_category": source,
                "source_category_code": raw["POI_catid_code"],
                "trajectory_id": raw["trajectory_id"],
                "city": city,
            }
        )
    )

    # spots: coordinates vary slightly between check-ins (median); one category per spot
    spots = pd.DataFrame({"venue_id": raw["POI_id"], "lat": raw["latitude"],
                          "lon": raw["longitude"], "source_category": source,
                          "category": category, "city": city})
    first = spots.groupby("venue_id", sort=True)[["source_category", "category", "city"]].first()
    coords = spots.groupby("venue_id", sort=True)[["lat", "lon"]].median()
    pois = pd.DataFrame(
        {
            "venue_id": coords.index.to_numpy(),
            "lat": coords["lat"].to_numpy(),
            "lon": coords["lon"].to_numpy(),
            "category": first["category"].to_numpy(),
            "source_category": first["source_category"].to_numpy(),
            "count": 1,
            "city": first["city"].to_numpy(),
        }
    )
    pois = pois[pois["category"].notna()].reset_index(drop=True)
    pois = validate_pois(pois) if len(pois) else None

    order = [_PREFIX + m for m in (*METRO_BOXES, OTHER)] + [_PREFIX + _STATE]
    present = set(visits["city"])
    cities = tuple(c for c in order if c in present)
    name = _PREFIX + (key if key is not None else _STATE)
    counts = ", ".join(
        f"{c} {n:,}" for c, n in visits["city"].value_counts().reindex(list(cities)).items()
    )
    return Bunch(
        visits=visits,
        pois=pois,
        city=name,
        cities=cities,
        metro_boxes=_boxes_frame(),
        n_dropped={},
        description=(
            f"Gowalla check-ins of California and Nevada, 2010-08-24 - 2010-10-22 (the "
            f"validation and test splits of the STHGCN preprocessing; the training split is "
            f"not available): {len(visits):,} check-ins of {visits['user_id'].nunique():,} "
            f"users at {visits['venue_id'].nunique():,} spots ({counts}); metros by fixed "
            f"boxes, check-ins outside every box kept as gowalla_other; Gowalla categories "
            f"mapped onto the 34-category taxonomy. Times are local (America/Los_Angeles). "
            f"Source: " + _REF
        ),
    )
