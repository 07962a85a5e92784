"""Each city's local time: a pipeline step that localises the visits' times per city."""

from __future__ import annotations

import pandas as pd

from .._validation import check_time_zone
from ..exceptions import SchemaError
from ..schema import CITY, DEFAULT_CITY, FINISHED_AT, STARTED_AT, format_rows
from ._frames import FrameTransformer, check_cities_given, localize_naive, parse_times

__all__ = ["CityTimeZoneLocalizer"]


class CityTimeZoneLocalizer(FrameTransformer):
    """Convert ``started_at`` (and ``finished_at``) to each city's local wall-clock time.

    The models read the local time of day and day of week of every visit; data sets store
    instants in UTC (GPS logs, Unix times) or with offsets. This step, put before a model,
    converts every visit's times to the time zone of its city and returns them as naive local
    times, which trajmoe reads as local time (one column can hold one time zone only, and the
    cities of a frame have several). It does what an estimator's ``city_tz`` parameter does,
    as a step of its own.

    Parameters
    ----------
    city_tz : str or dict of str -> str
        IANA time zone of every city (``{"nyc": "America/New_York", "tokyo": "Asia/Tokyo"}``),
        or one zone for all. Required: the default None raises at fit.
    naive_tz : str or None, default "UTC"
        Time zone of naive input times (no offset), e.g. UTC for GPS logs. None: naive times
        are local already and are left as they are.

    See Also
    --------
    trajmoe.sequences.time_features : how local times become the models' time features.

    Examples
    --------
    >>> import pandas as pd
    >>> from trajmoe.preprocessing import CityTimeZoneLocalizer
    >>> X = pd.DataFrame({"user_id": [1, 2], "city": ["nyc", "tokyo"], "x": 0, "y": 0,
    ...                   "started_at": pd.to_datetime(["2024-05-01 12:00", "2024-05-01 12:00"], utc=True)})
    >>> step = CityTimeZoneLocalizer({"nyc": "America/New_York", "tokyo": "Asia/Tokyo"})
    >>> step.fit_transform(X)["started_at"].astype(str).tolist()
    ['2024-05-01 08:00:00', '2024-05-01 21:00:00']
    """

    _parameter_constraints: dict = {
        "city_tz": [str, dict, None],
        "naive_tz": [str, None],
    }

    def __init__(self, city_tz=None, naive_tz="UTC"):
        self.city_tz = city_tz
        self.naive_tz = naive_tz

    def fit(self, X, y=None):
        """Check the parameters and that ``city_tz`` names a zone for every city of X.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame (``started_at`` and optionally ``finished_at``, ``city``).
        y : None
            Ignored.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If ``city_tz`` is None, names an unknown zone, or misses a city of X.
        trajmoe.exceptions.SchemaError
            If X is not a non-empty DataFrame, or a row has no city.
        """
        self._zones(X)
        return self

    def _zones(self, X):
        """Zone name of every city of X (dict), after checking the parameters."""
        self._validate_params()
        if not isinstance(X, pd.DataFrame) or not len(X):
            raise SchemaError(f"CityTimeZoneLocalizer needs a non-empty visit frame (DataFrame), got "
                              f"{type(X).__name__}{' with 0 rows' if isinstance(X, pd.DataFrame) else ''}.")
        if self.city_tz is None:
            raise ValueError("CityTimeZoneLocalizer needs city_tz: the IANA time zone of every city, "
                             "e.g. {'nyc': 'America/New_York'} (or one zone for all).")
        check_cities_given(X, "its time zone comes from it")
        cities = (X[CITY].astype(str).unique().tolist() if CITY in X.columns else [DEFAULT_CITY])
        zones = dict.fromkeys(cities, self.city_tz) if isinstance(self.city_tz, str) else self.city_tz
        missing = [c for c in cities if c not in zones]
        if missing:
            raise ValueError(f"city_tz has no time zone for the cities {missing} of X; it names {sorted(zones)}.")
        for city in cities:
            check_time_zone(f"city_tz[{city!r}]", zones[city])
        if self.naive_tz is not None:
            check_time_zone("naive_tz", self.naive_tz)
        return {c: zones[c] for c in cities}

    def transform(self, X):
        """X with ``started_at`` (and ``finished_at``) in each city's local wall-clock time.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame. Not modified.

        Returns
        -------
        DataFrame of shape (n_visits, n_columns)
            A copy of X whose time columns hold naive local times (datetime64); other columns
            and the index unchanged. Frames without ``started_at`` (``day``/``slot`` data)
            are returned unchanged.

        Raises
        ------
        ValueError
            As :meth:`fit`, for the cities of this X.
        trajmoe.exceptions.SchemaError
            As :meth:`fit`; also if a time string does not parse, naive and tz-aware times
            are mixed, or a naive time falls in an hour a daylight-saving change of ``naive_tz``
            repeats or skips (the message names the rows).
        """
        zones = self._zones(X)
        out = X.copy()
        city = X[CITY].astype(str).to_numpy() if CITY in X.columns else None
        for col in (STARTED_AT, FINISHED_AT):
            if col not in X.columns:
                continue
            times = _instants(X[col], self.naive_tz).reset_index(drop=True)
            pieces = [_wall_clock(times if city is None else times[city == name], zone, self.naive_tz,
                                  X.index if city is None else X.index[city == name])
                      for name, zone in zones.items()]
            out[col] = pd.concat(pieces).sort_index().to_numpy()
        return out


def _instants(values, naive_tz):
    """Times as datetime64 (tz-aware where the input has offsets; offsets that differ: instants,
    in UTC); values that do not parse, or naive and tz-aware values mixed, raise."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    parsed = parse_times(values, values.name)
    bad = (parsed.isna() & values.notna()).to_numpy()
    if bad.any():
        raise SchemaError(f"column {values.name!r} has {int(bad.sum())} unparsable value"
                          f"{'' if bad.sum() == 1 else 's'} at rows {format_rows(values.index, bad)}: "
                          f"fix or drop them (pd.to_datetime must accept every value)")
    return parsed


def _wall_clock(times, zone, naive_tz, labels):
    """Naive wall-clock times in ``zone`` of tz-aware times, or of naive times in ``naive_tz``
    (``labels``: the caller's row labels of ``times``, for the errors)."""
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        return times.dt.tz_convert(zone).dt.tz_localize(None)
    if naive_tz is None:
        return times
    local = localize_naive(times.set_axis(labels), naive_tz, times.name).set_axis(times.index)
    return local.dt.tz_convert(zone).dt.tz_localize(None)
