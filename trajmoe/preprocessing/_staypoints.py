"""Raw GPS fixes to stay points to the canonical visit frame, as a scikit-learn transformer."""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval

from .._validation import check_time_zone
from ..exceptions import DataWarning, SchemaError
from ..schema import (CITY, DEFAULT_CITY, FINISHED_AT, LAT, LON, STARTED_AT, TIME_RANGE, USER, format_rows,
                      validate_visits)
from ._adapters import TRACKED_AT, as_fixes, is_staypoints, staypoints_to_visits
from ._frames import FrameOutput, localize_naive, no_fit_params, parse_times

_INSTALL_HINT = "install it with `pip install 'trajmoe[gps]'` (or `pip install trackintel`)"


def _trackintel():
    try:
        import geopandas
        import trackintel
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"StayPointDetector needs trackintel and geopandas: {_INSTALL_HINT}") from exc
    return trackintel, geopandas


def _utc_times(times: pd.Series, tz):
    """Times as tz-aware UTC (NaT where missing or not representable) and the output zone.

    The output zone is ``tz`` when given, else the input's zone; None for naive input
    without ``tz`` (the output then is naive local time again). Strings or objects with
    different UTC offsets are read value by value, each in its own offset; naive and
    tz-aware values mixed raise (their order would be ambiguous).
    """
    col = times.name or TRACKED_AT
    if not pd.api.types.is_datetime64_any_dtype(times):
        times = parse_times(times, col)
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        return times.dt.tz_convert("UTC"), tz or str(times.dt.tz)
    if tz is not None:
        return localize_naive(times, tz, col).dt.tz_convert("UTC"), tz
    return times.dt.tz_localize("UTC"), None


def _check_time_range(index, utc: pd.Series):
    """Raise if a time (UTC, no NaT) lies outside :data:`trajmoe.schema.TIME_RANGE`."""
    lo, hi = TIME_RANGE
    wall = utc.dt.tz_localize(None)
    bad = ((wall < lo) | (wall >= hi)).to_numpy(dtype=bool)
    if bad.any():
        raise SchemaError(
            f"column {TRACKED_AT!r} has {int(bad.sum())} value{'' if bad.sum() == 1 else 's'} "
            f"outside {lo:%Y-%m-%d}..{hi - pd.Timedelta(days=1):%Y-%m-%d} at rows "
            f"{format_rows(index, bad)} (e.g. {utc[bad].iloc[0]}): placeholder dates such as "
            f"9999-12-31 or 1970-01-01 (Unix time 0) are not fix times. Drop those rows or give "
            f"their real times (numbers in the wrong unit: pd.to_datetime(values, unit='s', utc=True))"
        )


def _to_zone(times: pd.Series, zone):
    return times.dt.tz_convert(zone) if zone is not None else times.dt.tz_localize(None)


def _coordinate(fixes, col):
    """Column ``col`` of the fixes as float64 degrees (NaN where a value is no number)."""
    if pd.api.types.is_bool_dtype(fixes[col]):
        raise SchemaError(f"column {col!r} is boolean: give the coordinates as WGS84 degrees")
    return pd.to_numeric(fixes[col], errors="coerce").astype("float64")


def _check_not_swapped(index, lat, lon):
    """Raise if most latitudes lie beyond -90..90 while every longitude lies within it (a few
    such fixes are invalid fixes, dropped and counted)."""
    la, lo = np.abs(lat.to_numpy()), np.abs(lon.to_numpy())
    ok = np.isfinite(la) & np.isfinite(lo)
    bad = ok & (la > 90)
    if bad.sum() * 2 >= ok.sum() > 0 and (lo[ok] <= 90).all() and (la[ok] <= 180).all():
        raise SchemaError(
            f"column {LAT!r} has {int(bad.sum())} value{'' if bad.sum() == 1 else 's'} outside "
            f"-90..90 degrees at rows {format_rows(index, bad)}, while every {LON!r} is within "
            f"-90..90: latitude and longitude look swapped; fix with "
            f"X.rename(columns={{{LAT!r}: {LON!r}, {LON!r}: {LAT!r}}})"
        )


def _invalid_text(index, reasons):
    """'2 with missing 'user_id' at rows [3, 9], ...' for the reasons that hold for some rows."""
    return ", ".join(f"{int(m.sum())} with {what} at rows {format_rows(index, m)}"
                     for what, m in reasons.items() if m.any())


class StayPointDetector(FrameOutput, TransformerMixin, BaseEstimator):
    """Raw GPS fixes to stay points, returned as the canonical visit frame.

    A pipeline step before any trajmoe estimator: ``make_pipeline(StayPointDetector(...),
    estimator)`` runs on position fixes. Stay points are found with trackintel's sliding
    method (Li et al., 2008): a stay point is a run of one user's fixes that stays within
    ``dist_threshold`` metres of its first fix for at least ``time_threshold`` minutes; a gap
    of more than ``gap_threshold`` minutes between two fixes ends the run. Each stay point
    becomes one visit at the mean position of its fixes, from the time of its first fix to
    the time of the first fix outside it.

    Stateless: :meth:`fit` learns nothing (it checks the parameters and counts), so
    :meth:`transform` works on new fixes of any user. Invalid fixes (missing user, time or
    coordinates, coordinates outside -90..90 / -180..180 degrees) and duplicates (same
    user, time and position) are dropped before detection; every count is reported.

    Parameters
    ----------
    dist_threshold : float, default 100.0 (metres)
        Largest haversine distance from the first fix of a stay point; a fix farther away
        ends it.
    time_threshold : float, default 5.0 (minutes)
        Shortest time spent within ``dist_threshold`` for a run of fixes to count as a stay.
    gap_threshold : float, default 15.0 (minutes)
        Longest tolerated time between two consecutive fixes of a stay point; a longer
        tracking gap ends the run (so that an unobserved period is not taken as a stay).
    include_last : bool, default False
        Also emit the last stay point of each user, which the original algorithm omits
        because the user is never seen leaving it.
    city : str or None, default None
        City of every visit. None: the ``city`` column of the fixes when there is one (stay
        points are found within each city and user), else the default city ``"city"``.
    tz : str or None, default None
        Time zone of the city, e.g. ``"Asia/Shanghai"`` (the local time of day matters to
        the models). Tz-aware times are converted to it; naive times are read as local
        times of it. None: tz-aware times keep their zone; naive times are taken as local
        wall-clock times and the visits' times stay naive. Strings whose UTC offsets differ
        (``...+03:00`` in summer, ``...+02:00`` in winter) name no one zone: with None the
        visits' times are in UTC (the estimators then warn that the time of day is UTC's);
        give ``tz`` to keep local times.

    Attributes
    ----------
    n_fixes_ : int
        Fixes in the input of the last :meth:`fit`, :meth:`fit_transform` or
        :meth:`transform` (0 when it already held stay points).
    n_invalid_ : int
        Of those, dropped as invalid (missing user, time or coordinates; coordinates out of
        range).
    n_duplicates_ : int
        Dropped as duplicates (same user, time, lat and lon).
    n_fixes_merged_ : int
        Merged into stay points.
    n_fixes_unassigned_ : int
        In no stay point (in motion, in a tracking gap, or in a user's last stay when
        ``include_last`` is False).
    n_staypoints_ : int
        Stay points, i.e. rows of the visit frame.
    counts_ : dict of str -> int
        All of the above, plus ``n_users`` and ``n_users_without_staypoints``.

    See Also
    --------
    trajmoe.datasets.load_geolife : GeoLife GPS fixes to feed this step.
    trajmoe.preprocessing.as_fixes : the duck-typed inputs (trackintel, movingpandas,
        scikit-mobility).

    Notes
    -----
    Needs the optional dependency trackintel (``pip install 'trajmoe[gps]'``).

    References
    ----------
    .. [1] Li, Zheng, Xie, Chen, Liu, Ma, "Mining user similarity based on location history",
       ACM SIGSPATIAL GIS 2008 (the sliding stay point method).
    .. [2] Martin, Hong, Wiedemann, Suel, Raubal, "Trackintel: An open-source Python library
       for human mobility analysis", Computers, Environment and Urban Systems 101, 2023
       (``generate_staypoints``).

    Examples
    --------
    >>> import pandas as pd
    >>> from trajmoe.preprocessing import StayPointDetector
    >>> t = pd.date_range("2024-05-01 08:00", periods=30, freq="min", tz="Europe/Helsinki")
    >>> fixes = pd.DataFrame({"user_id": 1, "tracked_at": t,
    ...                       "lat": [60.17] * 15 + [60.20] * 15,
    ...                       "lon": [24.94] * 15 + [24.90] * 15})
    >>> visits = StayPointDetector(include_last=True).fit_transform(fixes)
    >>> visits[["started_at", "lat", "lon", "n_fixes"]]
                     started_at    lat    lon  n_fixes
    0 2024-05-01 08:00:00+03:00  60.17  24.94       15
    1 2024-05-01 08:15:00+03:00  60.20  24.90       15
    """

    _parameter_constraints: dict = {
        "dist_threshold": [Interval(Real, 0, None, closed="neither")],
        "time_threshold": [Interval(Real, 0, None, closed="left")],
        "gap_threshold": [Interval(Real, 0, None, closed="neither")],
        "include_last": ["boolean"],
        "city": [str, None],
        "tz": [str, None],
    }

    def __init__(self, dist_threshold=100.0, time_threshold=5.0, gap_threshold=15.0,
                 include_last=False, city=None, tz=None):
        self.dist_threshold = dist_threshold
        self.time_threshold = time_threshold
        self.gap_threshold = gap_threshold
        self.include_last = include_last
        self.city = city
        self.tz = tz

    def fit(self, X, y=None):
        """Check the parameters and count what :meth:`transform` would make of ``X``.

        Parameters
        ----------
        X : DataFrame of shape (n_fixes, n_columns) or another supported container
            Position fixes (see :meth:`transform`).
        y : None
            Ignored.

        Returns
        -------
        self
        """
        self._detect(X)
        return self

    def fit_transform(self, X, y=None, **fit_params):
        """Detect the stay points of ``X`` once (same as ``fit(X).transform(X)``).

        Parameters
        ----------
        X : DataFrame of shape (n_fixes, n_columns) or another supported container
            Position fixes (see :meth:`transform`).
        y : None
            Ignored.
        **fit_params : dict
            None: the step takes no fit parameters (a ValueError names any given, e.g.
            through ``Pipeline.fit(X, staypointdetector__...=...)``, rather than ignoring it).

        Returns
        -------
        visits : DataFrame of shape (n_staypoints, 8)
            As :meth:`transform`.
        """
        no_fit_params(self, fit_params)
        return self._detect(X)

    def transform(self, X):
        """Stay points of the fixes in ``X`` as the canonical visit frame.

        Parameters
        ----------
        X : DataFrame of shape (n_fixes, n_columns) or another supported container
            One row per GPS fix with ``user_id``, ``tracked_at`` (datetime64, tz-aware
            preferred), ``lat``, ``lon`` (WGS84 degrees) and optionally ``city``; other
            columns are ignored and the frame is never modified. Also accepted (see
            :func:`trajmoe.preprocessing.as_fixes`): a GeoDataFrame of points (trackintel
            positionfixes), a movingpandas TrajectoryCollection, a scikit-mobility
            TrajDataFrame; and stay points already made (trackintel staypoints: columns
            ``user_id``, ``started_at``, ``finished_at`` and a point geometry), which are
            passed through as visits without detection.

        Returns
        -------
        visits : DataFrame of shape (n_staypoints, 8)
            Valid for :func:`trajmoe.schema.validate_visits`, sorted by city, user and time,
            with a RangeIndex: ``user_id`` (as in the input), ``started_at``,
            ``finished_at`` (datetime64; time zone as described under ``tz``), ``lat``,
            ``lon`` (float64, mean position of the stay's fixes, WGS84 degrees), ``city``
            (str), ``n_fixes`` (int64, fixes merged into the stay point) and
            ``staypoint_id`` (int64, 0..n_staypoints-1 in row order).

        Raises
        ------
        SchemaError
            If a required column is missing or duplicated, ``tracked_at`` is not a time,
            mixes naive and tz-aware values or holds times outside 1971..2099
            (:data:`trajmoe.schema.TIME_RANGE`: placeholders, numbers in the wrong unit),
            naive times with ``tz`` fall in an hour its daylight-saving change repeats or skips,
            ``lat``/``lon`` look swapped or are boolean, or every fix is invalid (the
            message names the rows and the reason).
        ValueError
            If no stay point is found (the message gives the counts and what to change),
            ``tz`` is no IANA time zone, or ``city`` is given for fixes of a user in several
            cities (their ``city`` column).
        ImportError
            If trackintel is not installed.

        Warns
        -----
        DataWarning
            When fixes do not end up in a stay point: the counts of invalid, duplicate and
            unassigned (moving) fixes, and the users without any stay point.
        """
        return self._detect(X)

    # ------------------------------------------------------------------ work
    def _set_counts(self, **counts):
        self.counts_ = counts
        for name in ("n_fixes", "n_invalid", "n_duplicates", "n_fixes_merged",
                     "n_fixes_unassigned", "n_staypoints"):
            setattr(self, name + "_", counts[name])

    def _detect(self, X):
        self._validate_params()
        if self.city is not None and not self.city.strip():
            raise ValueError(f"city={self.city!r} is empty: give the city a name (cells are labelled "
                             "'<city>:<ix>_<iy>'), or None to read it from the fixes' 'city' column.")
        if self.tz is not None:
            check_time_zone("tz", self.tz)
        if is_staypoints(X):
            return self._from_staypoints(X)
        ti, gpd = _trackintel()
        fixes = as_fixes(X)
        n_in = len(fixes)
        if n_in == 0:
            raise SchemaError("the position fixes are empty (0 rows): pass at least one fix")
        if self.city is not None and CITY in fixes.columns:
            # one city for all: a user tracked in two cities of the column would become one track
            spread = fixes[[USER, CITY]].dropna().drop_duplicates()[USER].duplicated()
            if spread.any():
                users = sorted(map(str, fixes.loc[spread[spread].index, USER].unique()))
                raise ValueError(
                    f"city={self.city!r} puts every fix in one city, but users {users[:5]} have fixes in several "
                    f"cities of the {CITY!r} column: their tracks would be merged. Leave city=None to keep the "
                    "column, or detect each city's stay points with its own StayPointDetector.")
        if self.city is not None:
            city = pd.Series(self.city, index=fixes.index, dtype=object)
        elif CITY in fixes.columns:
            city = fixes[CITY].astype(object)
        else:
            city = pd.Series(DEFAULT_CITY, index=fixes.index, dtype=object)
        utc, zone = _utc_times(fixes[TRACKED_AT], self.tz)
        lat, lon = (_coordinate(fixes, col) for col in (LAT, LON))
        _check_not_swapped(fixes.index, lat, lon)
        known = utc.notna().to_numpy()
        _check_time_range(fixes.index[known], utc[known])
        reasons = {
            f"missing {USER!r}": fixes[USER].isna().to_numpy(),
            f"missing {CITY!r}": city.isna().to_numpy(),
            f"missing or unparsable {TRACKED_AT!r}": ~known,
            f"{LAT!r} missing or outside -90..90": ~lat.between(-90, 90).to_numpy(),
            f"{LON!r} missing or outside -180..180": ~lon.between(-180, 180).to_numpy(),
        }
        invalid = np.logical_or.reduce(list(reasons.values()))
        why = _invalid_text(fixes.index, reasons)
        if invalid.all():
            raise SchemaError(
                f"all {n_in} position fixes are invalid: {why}. Fix or drop those values "
                f"(lat/lon in WGS84 degrees; tracked_at a time)"
            )
        frame = pd.DataFrame({"city": city.astype(str), USER: fixes[USER], "t": utc,
                              LAT: lat, LON: lon})[~invalid]
        dup = frame.duplicated(subset=["city", USER, "t", LAT, LON]).to_numpy()
        frame = frame[~dup]
        # one trackintel "user" per (city, user): stay points never span two cities
        key, owners = pd.factorize(pd.MultiIndex.from_arrays([frame["city"], frame[USER]]))
        # fixes of one user at one instant in the order of their position, not of the input rows:
        # the same stay points whatever the row order
        order = np.lexsort((frame[LON].to_numpy(), frame[LAT].to_numpy(), frame["t"].to_numpy(), key))
        frame, key = frame.iloc[order], key[order]
        n_users = len(owners)
        merged, sp = 0, None
        if len(frame):
            pfs = gpd.GeoDataFrame(
                {"user_id": key.astype("int64"), "tracked_at": frame["t"].to_numpy()},
                geometry=gpd.points_from_xy(frame[LON].to_numpy(), frame[LAT].to_numpy()),
                crs="EPSG:4326",
            )
            pfs["tracked_at"] = pd.to_datetime(pfs["tracked_at"], utc=True)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="No staypoints can be generated")
                pfs, sp = ti.Positionfixes(pfs).generate_staypoints(
                    method="sliding", distance_metric="haversine",
                    dist_threshold=float(self.dist_threshold),
                    time_threshold=float(self.time_threshold),
                    gap_threshold=float(self.gap_threshold),
                    include_last=bool(self.include_last), exclude_duplicate_pfs=False)
            merged = int(pfs["staypoint_id"].notna().sum())
            n_fixes_per_sp = pfs["staypoint_id"].value_counts()
        n_sp = 0 if sp is None else len(sp)
        users_with = set() if n_sp == 0 else set(sp["user_id"].to_numpy().tolist())
        counts = dict(n_fixes=n_in, n_invalid=int(invalid.sum()), n_duplicates=int(dup.sum()),
                      n_fixes_merged=merged,
                      n_fixes_unassigned=n_in - int(invalid.sum()) - int(dup.sum()) - merged,
                      n_staypoints=n_sp, n_users=n_users,
                      n_users_without_staypoints=n_users - len(users_with))
        if n_sp == 0:  # raised before the counts are set: a failed call changes nothing
            raise ValueError(
                f"no stay point found in {n_in} fixes of {n_users} users "
                f"({counts['n_invalid']} invalid, {counts['n_duplicates']} duplicates dropped): "
                f"no run of fixes stays within dist_threshold={self.dist_threshold} m for "
                f"time_threshold={self.time_threshold} min without a gap over "
                f"gap_threshold={self.gap_threshold} min. Raise dist_threshold or "
                f"gap_threshold, lower time_threshold"
                + ("" if self.include_last else ", or set include_last=True (a single stay per "
                   "user is otherwise never emitted)")
                + ("; a user with a single fix never has a stay point" if n_in - counts["n_invalid"]
                   - counts["n_duplicates"] <= n_users else "")
            )
        self._set_counts(**counts)
        without = [owners[k] for k in range(n_users) if k not in users_with]
        self._report(counts, without, why)
        owner = owners[sp["user_id"].to_numpy()]
        visits = pd.DataFrame({
            USER: owner.get_level_values(1),
            STARTED_AT: _to_zone(sp[STARTED_AT], zone).to_numpy(),
            FINISHED_AT: _to_zone(sp[FINISHED_AT], zone).to_numpy(),
            LAT: sp.geometry.y.to_numpy(),
            LON: sp.geometry.x.to_numpy(),
            CITY: owner.get_level_values(0).astype(str),
            "n_fixes": n_fixes_per_sp.reindex(sp.index).fillna(0).to_numpy("int64"),
        })
        if zone is not None:  # .to_numpy() drops the zone: put it back
            for col in (STARTED_AT, FINISHED_AT):
                visits[col] = pd.to_datetime(visits[col], utc=True).dt.tz_convert(zone)
        return self._finish(visits)

    def _from_staypoints(self, X):
        visits = staypoints_to_visits(X, city=self.city)
        aware = {col: isinstance(visits[col].dtype, pd.DatetimeTZDtype) for col in (STARTED_AT, FINISHED_AT)
                 if pd.api.types.is_datetime64_any_dtype(visits[col])}
        if len(set(aware.values())) > 1:
            naive, zoned = (col for flag in (False, True) for col, value in aware.items() if value == flag)
            raise SchemaError(
                f"the stay points' {naive!r} is naive and their {zoned!r} tz-aware: the two would be read in "
                f"different zones. Make both tz-aware (e.g. sp[{naive!r}].dt.tz_localize(<time zone>)) or both "
                "naive local times")
        instants = {}
        for col in (STARTED_AT, FINISHED_AT):
            utc, zone = _utc_times(visits[col], self.tz)
            instants[col] = utc
            visits[col] = _to_zone(utc, zone)
        backwards = (instants[FINISHED_AT] < instants[STARTED_AT]).to_numpy(dtype=bool)
        if backwards.any():
            raise SchemaError(
                f"{int(backwards.sum())} stay point{'' if backwards.sum() == 1 else 's'} finish before "
                f"{'it starts' if backwards.sum() == 1 else 'they start'} ({FINISHED_AT!r} < {STARTED_AT!r}) at "
                f"rows {format_rows(X.index, backwards)}: swap or fix those times")
        n = len(visits)
        self._set_counts(n_fixes=0, n_invalid=0, n_duplicates=0, n_fixes_merged=0,
                         n_fixes_unassigned=0, n_staypoints=n,
                         n_users=int(visits[USER].nunique()), n_users_without_staypoints=0)
        return self._finish(visits)

    @staticmethod
    def _finish(visits):
        visits = validate_visits(visits).reset_index(drop=True)
        visits["staypoint_id"] = np.arange(len(visits), dtype="int64")
        return visits

    def _report(self, counts, without, why=""):
        lost = counts["n_fixes"] - counts["n_fixes_merged"]
        if not lost:
            return
        why = f" Invalid: {why}." if counts["n_invalid"] else ""
        who = ""
        if without:
            shown = ", ".join(repr(u) for u in without[:5]) + (", ..." if len(without) > 5 else "")
            who = f" {len(without)} users have no stay point: [{shown}] (city, user)."
        warnings.warn(
            f"StayPointDetector: {counts['n_fixes']:,} fixes of {counts['n_users']} users -> "
            f"{counts['n_staypoints']:,} stay points (dist_threshold={self.dist_threshold} m, "
            f"time_threshold={self.time_threshold} min, gap_threshold={self.gap_threshold} "
            f"min): {counts['n_fixes_merged']:,} fixes merged into stay points, {lost:,} not: "
            f"{counts['n_invalid']:,} invalid (missing user, time or coordinates, or "
            f"coordinates out of range) and {counts['n_duplicates']:,} duplicates (same user, "
            f"time and position) dropped, {counts['n_fixes_unassigned']:,} in motion, in "
            f"tracking gaps or in a user's last stay (include_last={self.include_last})."
            f"{who}{why} The counts are in the attribute counts_.",
            DataWarning,
            stacklevel=5,  # the caller of transform / fit_transform (set_output wraps them)
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = False
        return tags
