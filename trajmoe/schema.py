"""The canonical data model of trajmoe: column names, validation and data warnings.

A *visit frame* has one row per visit (stay point, check-in, photo, record):

================== ================================================== =========================
column             dtype                                              required
================== ================================================== =========================
``user_id``        any hashable                                       yes
``started_at``     datetime64 (tz-aware preferred)                    time form "datetime"
``day``            int, day index                                     time form "binned"
``slot``           int 0..47, half-hour of the day                    time form "binned"
``lat``            float, WGS84 degrees -90..90                       location form "latlon"
``lon``            float, WGS84 degrees -180..180                     location form "latlon"
``x``, ``y``       int grid indices of an already-gridded city        location form "grid"
                   (e.g. YJMob100K, 500 m cells)
``city``           str                                                no (default ``"city"``)
``poi_category``   str, a name of :data:`trajmoe.taxonomy.TAXONOMY`   no
================== ================================================== =========================

Each city uses one time form and one location form for all its rows; a frame of several cities
may mix forms across cities (e.g. after ``pd.concat`` of check-ins and gridded data).

A *POI frame* has ``city``, a location form, ``category`` (a taxonomy name) and an optional
``count`` (int, default 1) and ``source_category`` (the raw name).

Validation never modifies the caller's frame; errors say which column, which rows and how to fix
the input (in the spirit of trackintel's ``validate``).
"""

from __future__ import annotations

import datetime as _dt
import numbers
import re
import warnings

import numpy as np
import pandas as pd

from ._constants import MAX_CELL_INDEX, N_SLOTS
from .exceptions import DataWarning, SchemaError
from .taxonomy import TAXONOMY

__all__ = [
    "USER",
    "STARTED_AT",
    "FINISHED_AT",
    "DAY",
    "SLOT",
    "LAT",
    "LON",
    "X",
    "Y",
    "CITY",
    "DEFAULT_CITY",
    "POI_CATEGORY",
    "CATEGORY",
    "COUNT",
    "SOURCE_CATEGORY",
    "TRAJECTORY_ID",
    "N_SLOTS",
    "SchemaError",
    "DataWarning",
    "validate_visits",
    "validate_pois",
    "time_form",
    "location_form",
    "user_order",
    "TIME_RANGE",
    "MAX_DAY",
    "MAX_OFFSET_SPREAD",
]

USER = "user_id"
STARTED_AT = "started_at"
FINISHED_AT = "finished_at"
DAY = "day"
SLOT = "slot"
LAT = "lat"
LON = "lon"
X = "x"
Y = "y"
CITY = "city"
DEFAULT_CITY = "city"
POI_CATEGORY = "poi_category"
CATEGORY = "category"
COUNT = "count"
SOURCE_CATEGORY = "source_category"
TRAJECTORY_ID = "trajectory_id"

_MAX_LABELS = 5


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def format_rows(index: pd.Index, mask) -> str:
    """Format up to five row labels where ``mask`` is True, e.g. ``[4, 9, 12]``, for error messages.

    Parameters
    ----------
    index : Index of length n
        Row labels of the frame.
    mask : array-like of bool, shape (n,)
        Rows to name.

    Returns
    -------
    str
        The first five labels in brackets, followed by ``...`` when there are more.
    """
    mask = np.asarray(mask, dtype=bool)
    labels = list(index[mask][: _MAX_LABELS + 1])
    shown = ", ".join(
        repr(v.item() if isinstance(v, np.generic) else v) for v in labels[:_MAX_LABELS]
    )
    more = ", ..." if len(labels) > _MAX_LABELS else ""
    return f"[{shown}{more}]"


def _values_word(n: int, what: str) -> str:
    return f"{n} {what} value" + ("" if n == 1 else "s")


def _check_frame(X, name: str) -> None:
    if not isinstance(X, pd.DataFrame):
        raise SchemaError(
            f"{name} must be a pandas DataFrame with one row per "
            f"{'visit' if name == 'X' else 'POI'}, got {type(X).__name__}: build one with "
            f"pd.DataFrame(...) (see trajmoe.schema for the columns)"
        )
    if len(X) == 0:
        raise SchemaError(f"{name} is empty (0 rows): pass at least one row")
    if not X.columns.is_unique:
        dup = sorted({str(c) for c in X.columns[X.columns.duplicated()]})
        raise SchemaError(f"{name} has duplicated column names {dup}: rename or drop them")


def _no_missing(out: pd.DataFrame, col: str, fix: str = "drop or fill them") -> None:
    miss = out[col].isna().to_numpy()
    if miss.any():
        raise SchemaError(
            f"column {col!r} has {_values_word(int(miss.sum()), 'NaN')} at rows "
            f"{format_rows(out.index, miss)}: {fix} before fitting or predicting"
        )


def _numeric(out: pd.DataFrame, col: str) -> pd.Series:
    """Column as float64; non-numeric entries raise."""
    s = out[col]
    if pd.api.types.is_bool_dtype(s):
        raise SchemaError(f"column {col!r} is boolean: it must hold numbers")
    if pd.api.types.is_numeric_dtype(s):
        return s.astype("float64")
    conv = pd.to_numeric(s, errors="coerce")
    bad = (conv.isna() & s.notna()).to_numpy()
    if bad.any():
        raise SchemaError(
            f"column {col!r} has {int(bad.sum())} non-numeric value"
            f"{'' if bad.sum() == 1 else 's'} at rows {format_rows(out.index, bad)}: convert them "
            f"to numbers (e.g. pd.to_numeric) or drop those rows before fitting or predicting"
        )
    return conv.astype("float64")


def _check_range(out: pd.DataFrame, col: str, lo: float, hi: float, unit: str,
                 fix: str = "fix or drop them before fitting or predicting") -> None:
    v = out[col].to_numpy(dtype="float64")
    bad = (v < lo) | (v > hi)
    if bad.any():
        raise SchemaError(
            f"column {col!r} has {int(bad.sum())} value{'' if bad.sum() == 1 else 's'} outside "
            f"{lo:g}..{hi:g} {unit} at rows {format_rows(out.index, bad)}: {fix}"
        )


def _integral(out: pd.DataFrame, col: str, what: str, hint: str = "") -> None:
    """Require whole numbers (already float, no NaN); cast the column to int64 in ``out``."""
    v = _numeric(out, col)
    _no_missing(out.assign(**{col: v}), col)
    arr = v.to_numpy()
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    if bad.any():
        raise SchemaError(
            f"column {col!r} ({what}) has {int(bad.sum())} non-integer value"
            f"{'' if bad.sum() == 1 else 's'} at rows {format_rows(out.index, bad)}: it must hold "
            f"whole numbers{hint}"
        )
    out[col] = arr.astype("int64")


def time_form(X: pd.DataFrame) -> str:
    """Which time form a visit frame uses.

    Parameters
    ----------
    X : DataFrame of shape (n_visits, n_columns)
        A visit frame.

    Returns
    -------
    form : {"datetime", "binned"}
        ``"datetime"`` when ``started_at`` is present (it wins when both forms are present),
        ``"binned"`` when both ``day`` and ``slot`` are present.

    Raises
    ------
    SchemaError
        When neither form is present.

    References
    ----------
    trackintel's staypoint model (Martin et al., 2023, "Trackintel: An open-source Python
    library for human mobility analysis", CEUS 101).
    """
    cols = set(X.columns)
    if STARTED_AT in cols:
        return "datetime"
    if DAY in cols and SLOT in cols:
        return "binned"
    half = [c for c in (DAY, SLOT) if c in cols]
    hint = f" (found only {half[0]!r})" if half else ""
    raise SchemaError(
        f"no time form found{hint}: add a column {STARTED_AT!r} (datetime64, tz-aware "
        f"preferred) or both {DAY!r} (int day index) and {SLOT!r} (int half-hour 0..47); "
        f"columns present: {[str(c) for c in X.columns]}"
    )


def location_form(X: pd.DataFrame) -> str:
    """Which location form a visit or POI frame uses.

    Parameters
    ----------
    X : DataFrame of shape (n_rows, n_columns)
        A visit or POI frame.

    Returns
    -------
    form : {"latlon", "grid"}
        ``"latlon"`` when both ``lat`` and ``lon`` (WGS84 degrees) are present (it wins when
        both forms are present), ``"grid"`` when both ``x`` and ``y`` (int cell indices) are.

    Raises
    ------
    SchemaError
        When neither form is present.

    References
    ----------
    Yabe et al., "YJMob100K: City-scale and longitudinal dataset of anonymized human mobility
    trajectories", Scientific Data 11, 2024 (the gridded form).
    """
    cols = set(X.columns)
    if LAT in cols and LON in cols:
        return "latlon"
    if "x" in cols and "y" in cols:
        return "grid"
    half = [c for c in (LAT, LON, "x", "y") if c in cols]
    hint = f" (found only {half})" if half else ""
    raise SchemaError(
        f"no location form found{hint}: add columns {LAT!r} and {LON!r} (float WGS84 "
        f"degrees) or {'x'!r} and {'y'!r} (int grid cells); columns present: "
        f"{[str(c) for c in X.columns]}"
    )


#: Accepted ``started_at`` values: from ``TIME_RANGE[0]`` up to, not including, ``TIME_RANGE[1]``
#: (UTC instants for tz-aware times, local wall-clock times for naive ones). Values outside are
#: placeholders, not visit times: 9999-12-31 (an "open end"), 1970-01-01 (Unix time 0 for
#: "unknown"), 1900-01-01 or 0001-01-01 (database minima), or numbers read in the wrong unit
#: (Unix seconds taken as milliseconds land in January 1970).
TIME_RANGE = (pd.Timestamp("1971-01-01"), pd.Timestamp("2100-01-01"))
#: Largest magnitude of a ``day`` index (about 274 years of days; larger ones overflow the
#: nanosecond time keys).
MAX_DAY = 100_000


def _from_arrow(s: pd.Series) -> pd.Series:
    """A pyarrow-backed timestamp or date column as the equivalent numpy-backed datetime64
    column (same unit and time zone); other columns unchanged."""
    dtype = s.dtype
    if not isinstance(dtype, pd.ArrowDtype):
        return s
    import pyarrow as pa  # present whenever an ArrowDtype exists

    pa_type = dtype.pyarrow_dtype
    if pa.types.is_timestamp(pa_type):
        unit = pa_type.unit if pa_type.unit in ("s", "ms", "us", "ns") else "ns"
        if pa_type.tz is None:
            return s.astype(f"datetime64[{unit}]")
        return s.astype(pd.DatetimeTZDtype(unit=unit, tz=pa_type.tz))
    if pa.types.is_date(pa_type):
        return s.astype("datetime64[s]")
    return s


def _parse_each(s: pd.Series) -> pd.Series:
    """Parse every value on its own (object column of Timestamps, each with its own UTC offset
    or none; NaT where a value does not parse)."""

    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return pd.NaT
        try:
            return pd.Timestamp(v)
        except (ValueError, TypeError, OverflowError):
            return pd.NaT

    return s.map(one).astype(object)


def _check_time_range(index: pd.Index, parsed: pd.Series, col: str) -> None:
    """Raise if parsed times (no NaT) fall outside :data:`TIME_RANGE`."""
    lo, hi = TIME_RANGE
    if pd.api.types.is_datetime64_any_dtype(parsed):
        wall = parsed.dt.tz_convert("UTC").dt.tz_localize(None) if parsed.dt.tz is not None else parsed
        bad = ((wall < lo) | (wall >= hi)).to_numpy(dtype=bool)
        # the example in UTC: a zone-aware Timestamp past the year 9999 cannot be built
        shown, suffix = wall, " UTC" if parsed.dt.tz is not None else ""
    else:  # object column of Timestamps with their own zones
        bad = parsed.map(lambda v: not lo <= (v.tz_convert("UTC").tz_localize(None)
                                               if v.tzinfo is not None else v) < hi).to_numpy(dtype=bool)
        shown, suffix = parsed, ""
    if bad.any():
        first = f"{shown[bad].iloc[0]}{suffix}"
        raise SchemaError(
            f"column {col!r} has {int(bad.sum())} value{'' if bad.sum() == 1 else 's'} outside "
            f"{lo:%Y-%m-%d}..{hi - pd.Timedelta(days=1):%Y-%m-%d} at rows {format_rows(index, bad)} "
            f"(e.g. {first}): placeholder dates such as 9999-12-31 (an 'open end') or 1970-01-01 "
            f"(Unix time 0) are not visit times. Drop those rows or give their real times "
            f"(numbers in the wrong unit: pd.to_datetime(values, unit='s', utc=True))"
        )


def parse_one_format(values: pd.Series) -> pd.Series | None:
    """Times of a column of strings read with the one format pandas infers from its first value.

    Parameters
    ----------
    values : Series of str

    Returns
    -------
    Series of datetime64 or None
        None where some value does not read with that format (or offsets differ): the caller
        then reads the values one by one, after :func:`check_day_month`. pandas' warning that it
        could not infer a format is not shown (the caller's fallback is the answer to it).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Could not infer format", category=UserWarning)
        try:
            parsed = pd.to_datetime(values, errors="coerce")
        except (ValueError, TypeError, OverflowError):
            return None
    return None if (parsed.isna() & values.notna()).any() else parsed


def check_day_month(values: pd.Series, col: str) -> None:
    """Refuse a column of date strings that value-by-value parsing would read inconsistently.

    When a column's strings do not share one format (pandas cannot read them all with the
    format it infers from the first), they are parsed value by value, month first
    (``format="mixed"``). Values such as ``"08.04.2012"`` then read as August 4 while
    ``"13.04.2012"`` reads as April 13: a silent mix of two conventions. This raises when a value
    that does not start with its year reads differently day first.

    Parameters
    ----------
    values : Series of str
        The raw column.
    col : str
        Its name (for the message).

    Raises
    ------
    SchemaError
        Naming the ambiguous rows and an example, and how to give the format.
    """
    text = values.astype("string")
    unsure = (values.notna() & ~text.str.match(r"\s*[+-]?\d{4}").fillna(False)).to_numpy(dtype=bool)
    if not unsure.any():
        return
    sub = values[unsure]
    month = pd.to_datetime(sub, errors="coerce", format="mixed", utc=True)
    day = pd.to_datetime(sub, errors="coerce", format="mixed", utc=True, dayfirst=True)
    differ = np.zeros(len(values), dtype=bool)
    differ[np.flatnonzero(unsure)] = (month.notna() & day.notna() & (month != day)).to_numpy(dtype=bool)
    if differ.any():
        first = int(np.flatnonzero(differ)[0])
        example = values.iloc[first]
        raise SchemaError(
            f"column {col!r}: its strings do not all read with the one format pandas infers from the first "
            f"value, and read value by value {int(differ.sum())} of them read differently day first and "
            f"month first, at rows {format_rows(values.index, differ)} (e.g. "
            f"{example!r}: {month[values.index[first]]} or {day[values.index[first]]}): convert the column with its "
            f"format first, e.g. pd.to_datetime(X[{col!r}], format='%d.%m.%Y %H:%M')")


def _parse_started_at(out: pd.DataFrame, col: str = STARTED_AT) -> pd.Series:
    """Return a sort key (UTC instant, or naive local time) and store the parsed column.

    Strings whose UTC offsets differ (a daylight-saving change, or several zones) are read
    value by value as instants, each keeping its own offset; pyarrow-backed timestamps are
    converted to numpy-backed ones.
    """
    s = _from_arrow(out[col])
    if pd.api.types.is_datetime64_any_dtype(s):
        parsed = s
    elif pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        raise SchemaError(
            f"column {col!r} has dtype {s.dtype}, not datetime64: convert it, e.g. "
            f"pd.to_datetime(X[{col!r}], unit='s', utc=True).dt.tz_convert(<city time zone>)"
        )
    else:
        is_obj_ts = s.map(lambda v: isinstance(v, (pd.Timestamp, _dt.datetime))).to_numpy()
        if is_obj_ts.all() or (is_obj_ts | s.isna().to_numpy()).all():
            # datetimes kept in an object column, e.g. after concatenating cities with
            # different time zones: keep each value with its own zone
            try:
                parsed = pd.to_datetime(s)
            except (ValueError, TypeError):
                parsed = s.map(lambda v: pd.Timestamp(v) if not pd.isna(v) else pd.NaT)
        else:
            parsed = parse_one_format(s)
            if parsed is None:
                check_day_month(s, col)       # read value by value below: both conventions mixed?
                try:
                    parsed = pd.to_datetime(s, errors="coerce", format="mixed")
                except (ValueError, TypeError, OverflowError):
                    # different UTC offsets (a DST change, several zones) or naive and tz-aware
                    # strings mixed: every value is an instant of its own offset (a city mixing
                    # naive and tz-aware values is refused below)
                    parsed = _parse_each(s)
            bad = (parsed.isna() & s.notna()).to_numpy()
            if bad.any():
                digits = s[bad].astype("string").str.fullmatch(r"\s*\d{9,13}(\.\d*)?\s*").fillna(False).all()
                raise SchemaError(
                    f"column {col!r} has {int(bad.sum())} unparsable value"
                    f"{'' if bad.sum() == 1 else 's'} at rows {format_rows(out.index, bad)}: "
                    f"fix or drop them (pd.to_datetime must accept every value)"
                    + (f"; they look like Unix times written as text: convert them, e.g. pd.to_datetime("
                       f"X[{col!r}].astype(float), unit='s', utc=True) (unit='ms' for 13 digits)" if digits else "")
                )
    miss = parsed.isna().to_numpy()
    if miss.any():
        raise SchemaError(
            f"column {col!r} has {_values_word(int(miss.sum()), 'missing (NaT)')} at rows "
            f"{format_rows(out.index, miss)}: drop or fill them before fitting or predicting"
        )
    if not pd.api.types.is_datetime64_any_dtype(parsed):
        _no_mixed_naive_aware(out, parsed, col)
    _check_time_range(out.index, parsed, col)
    out[col] = parsed
    if pd.api.types.is_datetime64_any_dtype(parsed):
        return parsed
    # object column of timestamps with different zones: order by the UTC instant
    return parsed.map(
        lambda v: v.tz_convert("UTC").tz_localize(None) if v.tzinfo is not None else v
    ).astype("datetime64[ns]")


_UTC_NAMES = frozenset({"UTC", "ETC/UTC", "GMT", "ETC/GMT", "Z", "ZULU", "ETC/ZULU", "UNIVERSAL",
                        "ETC/UNIVERSAL", "UCT", "ETC/UCT", "GMT0", "ETC/GMT0", "ETC/GMT+0", "ETC/GMT-0",
                        "UTC+00:00", "TZUTC()"})
#: UTC offsets of one city's times may differ by this much (a daylight-saving change) before
#: local times read in each value's own offset are reported as inconsistent.
MAX_OFFSET_SPREAD = pd.Timedelta(hours=1)


def _is_utc(tz) -> bool:
    return tz is not None and str(tz).upper() in _UTC_NAMES


def warn_if_local_time_unknown(city, values: pd.Series, stacklevel: int = 4) -> None:
    """DataWarning when a city's tz-aware times do not tell its local time of day.

    Called for a city without a ``city_tz`` zone, whose local time is read in each value's
    own zone: warns when every value is in UTC (rarely a city's local time), or when the
    values' UTC offsets lie more than :data:`MAX_OFFSET_SPREAD` apart (more than a
    daylight-saving change: the same instant given as UTC and as +09:00 falls into
    different slots and weekdays). Naive times (already local) pass silently.

    Parameters
    ----------
    city : str
    values : Series of datetime64 or object (Timestamps)
        The city's validated ``started_at`` values (:func:`validate_visits`).
    stacklevel : int, default 4
    """

    fix = (f"Pass city_tz={{{city!r}: '<IANA zone>'}} (e.g. 'Asia/Tokyo') to the estimator, or "
           f"convert the times to the city's zone: X[{STARTED_AT!r}].dt.tz_convert(zone)")
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        zones, offsets = [values.dt.tz], None
    elif pd.api.types.is_object_dtype(values):
        aware = values[values.map(lambda v: getattr(v, "tzinfo", None) is not None)]
        if not len(aware):
            return
        zones = list({str(v.tzinfo) for v in aware.head(10_000)})
        offsets = aware.map(lambda v: v.utcoffset())
    else:
        return
    if all(_is_utc(z) for z in zones):
        warnings.warn(
            f"city {city!r}: {STARTED_AT!r} is in UTC and no city_tz is given, so the local time "
            f"of day and the weekday are read in UTC (a visit at 09:00 in Tokyo reads as 00:00). "
            f"{fix}",
            DataWarning,
            stacklevel=stacklevel,
        )
        return
    if offsets is not None and offsets.max() - offsets.min() > MAX_OFFSET_SPREAD:
        counts = offsets.value_counts().sort_index()
        shown = ", ".join(f"{_offset_text(k)} ({v})" for k, v in counts.head(6).items())
        warnings.warn(
            f"city {city!r}: {STARTED_AT!r} values carry UTC offsets more than "
            f"{MAX_OFFSET_SPREAD.total_seconds() / 3600:g} hour apart ({shown}; rows per offset) "
            f"and no city_tz is given: each value's local time is read in its own offset, so "
            f"the same instant given as UTC and as +09:00 falls into different slots and "
            f"weekdays. {fix}",
            DataWarning,
            stacklevel=stacklevel,
        )


def _offset_text(delta: pd.Timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _no_mixed_naive_aware(out: pd.DataFrame, parsed: pd.Series, col: str) -> None:
    """Raise if one city's times mix tz-aware and naive values (their order and local time
    of day would be ambiguous); different cities may use different kinds."""
    aware = parsed.map(lambda v: getattr(v, "tzinfo", None) is not None).to_numpy(dtype=bool)
    if aware.all() or not aware.any():
        return
    cities = out[CITY] if CITY in out.columns else pd.Series(DEFAULT_CITY, index=out.index)
    for city, pos in cities.groupby(cities.to_numpy(), sort=False).indices.items():
        a = aware[pos]
        if a.any() and not a.all():
            naive = np.zeros(len(out), dtype=bool)
            naive[pos[~a]] = True
            raise SchemaError(
                f"column {col!r} of city {city!r} mixes tz-aware and naive times: "
                f"{int(naive.sum())} naive value{'' if naive.sum() == 1 else 's'} at rows "
                f"{format_rows(out.index, naive)} next to {int(a.sum())} tz-aware ones. Make them "
                f"all tz-aware (e.g. pd.Timestamp(t).tz_localize(<city time zone>) for the naive "
                f"ones) or all naive local times"
            )


def _distinct_names(out: pd.DataFrame) -> None:
    """SchemaError where two distinct values of the city column have one name as text (``7``
    and ``"7"``): cities are named by their text, and the two would be merged into one."""
    values = pd.unique(out[CITY].to_numpy(object))                         # few cities: cheap
    names = pd.Series([str(v) for v in values])
    clash = names.duplicated(keep=False).to_numpy()
    if not clash.any():
        return
    clashing = [v for v, c in zip(values, clash) if c]
    rows = out[CITY].isin(clashing).to_numpy()
    shown = ", ".join(f"{v!r} ({type(v).__name__})" for v in clashing[:6])
    raise SchemaError(
        f"column {CITY!r} has distinct values with the same name as text: {shown}, at rows "
        f"{format_rows(out.index, rows)}. Cities are named by their text, so these would be one city: "
        f"give them one type (e.g. X[{CITY!r}].astype(str)) if they are one city, else distinct names"
    )


def _city(out: pd.DataFrame) -> None:
    if CITY not in out.columns:
        out[CITY] = DEFAULT_CITY
        return
    _no_missing(out, CITY, fix=f"fill them with a city name (or drop the {CITY!r} column)")
    _distinct_names(out)
    out[CITY] = out[CITY].astype(str)
    blank = [name for name in pd.unique(out[CITY]) if not name.strip()]     # few names: cheap
    if blank:
        rows = out[CITY].isin(blank).to_numpy()
        raise SchemaError(
            f"column {CITY!r} has {int(rows.sum())} empty name{'' if rows.sum() == 1 else 's'} at rows "
            f"{format_rows(out.index, rows)}: give each city a name (cells are labelled "
            f"'<city>:<ix>_<iy>'), or drop the {CITY!r} column for one unnamed city"
        )


def _stable_sort(out: pd.DataFrame, keys: list[pd.Series]) -> pd.DataFrame:
    """Stable lexicographic sort by the given aligned key series; keeps index labels."""
    frame = pd.DataFrame({f"_k{i}": k.reset_index(drop=True) for i, k in enumerate(keys)})
    try:
        order = frame.sort_values(list(frame.columns), kind="stable").index.to_numpy()
    except TypeError:
        # mixed-type keys (e.g. int and str user ids): order them by their string form
        frame = frame.astype({c: str for c in frame.columns if frame[c].dtype == object})
        order = frame.sort_values(list(frame.columns), kind="stable").index.to_numpy()
    return out.iloc[order]


# --------------------------------------------------------------------------------------------
# public validators
# --------------------------------------------------------------------------------------------
def validate_visits(X: pd.DataFrame, *, duplicates: str = "warn") -> pd.DataFrame:
    """Check a visit frame and return a clean, sorted copy.

    Parameters
    ----------
    X : DataFrame of shape (n_visits, n_columns)
        One row per visit. Required: ``user_id`` (hashable); one time form, either
        ``started_at`` (datetime64, tz-aware preferred, or strings that ``pd.to_datetime``
        parses; the local wall-clock time of the city is what matters, a naive time is taken as
        already local) or ``day`` (int day index) and ``slot`` (int half-hour 0..47); one
        location form, either ``lat``/``lon`` (float WGS84 degrees) or ``x``/``y`` (int grid
        cells). Optional: ``city`` (str), ``poi_category``; other columns are kept untouched.
        Mixed forms are allowed (e.g. ``day``/``slot`` with ``lat``/``lon``). Times may be
        numpy- or pyarrow-backed (``pd.ArrowDtype(pa.timestamp(...))``); strings whose UTC
        offsets differ (a daylight-saving change, or several zones) are read as instants,
        each value keeping its own offset as its local time.
    duplicates : {"warn", "drop", "ignore"}, default "warn"
        Exact duplicate rows (every column equal, the index aside): ``"warn"`` keeps them
        (so that every row of ``X`` keeps a prediction) and reports them with a
        DataWarning; ``"drop"`` keeps the first of each group and reports how many were
        dropped; ``"ignore"`` keeps them silently.

    Returns
    -------
    visits : DataFrame of shape (n_visits, n_columns or n_columns + 1)
        A new frame (``X`` is never modified) with ``city`` added (value ``"city"``) when
        absent and cast to str, ``started_at`` parsed to datetime64 (an object column of
        Timestamps when one column holds several UTC offsets), ``day``/``slot``/``x``/``y``
        cast to int64, ``lat``/``lon`` to float64, rows sorted stably by (city, user_id,
        time, place, content) where user ids are ordered by :func:`user_order` (numbers by
        value, typed as int, float or text alike), time is ``started_at`` (UTC instant) or
        (``day``, ``slot``), place is a hash of ``lat``/``lon`` (or ``x``/``y``) and content a
        hash of every column, and exact duplicates by their index labels. Rows at the same time
        thus come in the same order whatever their input order, and columns the library does
        not read change only the order of rows that agree on everything it reads. The original
        index labels are kept so results can
        be re-aligned with ``X``. With ``duplicates="drop"``, n_visits less the duplicates.

    Raises
    ------
    SchemaError
        If ``X`` is not a DataFrame, is empty, lacks ``user_id``, a time form or a location
        form; if ``user_id``/``city`` hold missing values; if ``started_at`` has missing or
        unparsable values, or values outside :data:`TIME_RANGE` (1971-01-01..2099-12-31:
        placeholders such as 9999-12-31 or 1970-01-01); if ``lat``/``lon`` are NaN or outside
        -90..90 / -180..180 degrees, or ``lat`` lies beyond the latitudes UTM covers
        (-80..84); if ``slot`` is outside 0..47 or ``|day|`` exceeds :data:`MAX_DAY`; if
        ``day``, ``slot``, ``x`` or ``y`` are NaN or not whole numbers, or ``|x|``/``|y|``
        reach 2**30; if one city's ``started_at`` mixes naive and tz-aware values. The
        message names the column, up to five row labels with the count, and the fix (e.g.
        swapped ``lat``/``lon``).
    ValueError
        If ``duplicates`` is not one of the values above.

    Warns
    -----
    DataWarning
        If ``X`` holds exact duplicate rows (count and rows; see ``duplicates``).

    Notes
    -----
    Outlier coordinates (null island, points far from a city's centre) are valid degrees
    and pass; :class:`trajmoe.SpatialSemanticEncoder` leaves them out of the city's grid and
    reports them. Local time of tz-aware values is read in each value's own zone unless an
    estimator's ``city_tz`` says otherwise (see :func:`trajmoe.sequences.time_features`).

    References
    ----------
    Martin et al., "Trackintel: An open-source Python library for human mobility analysis",
    Computers, Environment and Urban Systems 101, 2023 (a strict data model with fix-it
    validation messages).

    Examples
    --------
    >>> import pandas as pd
    >>> from trajmoe.schema import validate_visits
    >>> X = pd.DataFrame({"user_id": [2, 1, 1], "day": [0, 1, 0], "slot": [5, 3, 7],
    ...                   "x": [10, 11, 12], "y": [1, 2, 3]})
    >>> validate_visits(X).index.tolist()
    [2, 1, 0]
    """
    return validated_visits(X, duplicates)


def validated_visits(X, duplicates, labels=None):
    """:func:`validate_visits` of X whose exact duplicates are ordered by ``labels``.

    :func:`trajmoe.encoder.validate_positional` validates X under positions and orders its
    duplicates by the caller's labels through it.

    Parameters
    ----------
    X : DataFrame of shape (n_visits, n_columns)
    duplicates : {"warn", "drop", "ignore"}
    labels : Index of length n_visits, optional
        Default: X's own index.

    Returns
    -------
    DataFrame
        As :func:`validate_visits`.

    Raises
    ------
    SchemaError
        As :func:`validate_visits`.
    """
    _check_frame(X, "X")
    if USER not in X.columns:
        raise SchemaError(
            f"missing required column {USER!r}: rename your user column, e.g. "
            f"X.rename(columns={{'uid': {USER!r}}}); columns present: "
            f"{[str(c) for c in X.columns]}"
        )
    time_form(X)
    location_form(X)
    out = X.copy()
    _no_missing(out, USER, fix="drop those rows or give them a user id")
    _city(out)
    tforms = _forms_per_city(out, "time")
    city = out[CITY].to_numpy()

    time_key = np.zeros(len(out), dtype=np.int64)
    dt_rows = np.isin(city, [c for c, f in tforms.items() if f == "datetime"])
    if dt_rows.all():
        time_key = _instant_ns(_parse_started_at(out))
    elif dt_rows.any():
        sub = out.iloc[np.flatnonzero(dt_rows)].copy()
        time_key[dt_rows] = _instant_ns(_parse_started_at(sub))
    if not dt_rows.all():
        sub = out.iloc[np.flatnonzero(~dt_rows)].copy()
        _integral(sub, DAY, "day index")
        _integral(sub, SLOT, "half-hour slot")
        _check_range(sub, SLOT, 0, N_SLOTS - 1, "(half-hour slots)")
        _check_range(sub, DAY, -MAX_DAY, MAX_DAY, "(day indices; days since the start of the data)")
        time_key[~dt_rows] = (sub[DAY].to_numpy(np.int64) * 1440 + sub[SLOT].to_numpy(np.int64) * 30) * 60_000_000_000
        if not dt_rows.any():
            out[DAY], out[SLOT] = sub[DAY], sub[SLOT]

    _check_locations(out, "visits")
    # ties in time are ordered by the place visited, then by the content of the rows, never by
    # their input order, nor by columns the library does not read
    content = row_hash(out)
    place = _place_hash(out)
    # exact duplicates, last, by their index labels: which of them keeps a visit's target
    # (the others repeat its results) does not follow the input order either
    out = _stable_sort(out, [out[CITY], pd.Series(user_order(out[USER]), index=out.index),
                             pd.Series(time_key, index=out.index), place, content,
                             pd.Series(_label_rank(X.index if labels is None else labels), index=out.index)])
    return _handle_duplicates(out, duplicates, content.loc[out.index] if out.index.is_unique else None)


_DUPLICATES = ("warn", "drop", "ignore")


def _label_rank(index: pd.Index) -> np.ndarray:
    """Place of every index label in the sorted labels (by their text where they do not
    compare), int64; equal labels keep their order."""
    try:
        order = np.asarray(index.argsort(kind="stable"))
    except TypeError:
        order = np.argsort(index.astype(str).to_numpy(), kind="stable")
    rank = np.empty(len(index), np.int64)
    rank[order] = np.arange(len(index))
    return rank


def _place_hash(out: pd.DataFrame) -> pd.Series:
    """A uint64 per row from where the visit was: ``lat``/``lon`` where the row has them, else
    ``x``/``y`` (as float64, as a frame of several cities holds them when another city gives
    ``lat``/``lon``), so that a city's rows get the same hashes alone and concatenated with
    cities of the other location form."""
    latlon = [c for c in (LAT, LON) if c in out.columns]
    grid = [c for c in (X, Y) if c in out.columns]
    place = np.zeros(len(out), np.uint64)
    by_grid = np.ones(len(out), bool)
    if len(latlon) == 2:
        by_grid = out[latlon].isna().any(axis=1).to_numpy()
        place[~by_grid] = row_hash(out.loc[~by_grid, latlon].astype(np.float64)).to_numpy()
    if len(grid) == 2 and by_grid.any():
        place[by_grid] = row_hash(out.loc[by_grid, grid].astype(np.float64)).to_numpy()
    return pd.Series(place, index=out.index)


def user_order(users: pd.Series) -> np.ndarray:
    """Rank of each row's user id in one order that does not depend on how the ids are typed.

    Numbers, whether typed as int, float or text (``7``, ``7.0``, ``"7"``, ``"7.0"`` or
    ``" 7"``, as a CSV read with or without ``dtype=str`` gives them), sort by their value and
    before other ids, which sort by their text. A frame thus orders its users, and splits
    them, the same way whichever type its ids have.

    Parameters
    ----------
    users : Series of shape (n_rows,)
        The ``user_id`` column (any hashable values).

    Returns
    -------
    ndarray of int64, shape (n_rows,)
        0 for the rows of the first user in that order, 1 for the next, ...; -1 for a missing
        id. Ids of different types stay different users (``7`` and ``"7"`` in one frame get
        two ranks, next to each other).
    """
    codes, uniques = pd.factorize(users)
    keys = [_user_key(u) for u in uniques]
    rank = np.empty(len(keys), np.int64)
    rank[sorted(range(len(keys)), key=keys.__getitem__)] = np.arange(len(keys))
    return np.where(codes < 0, -1, rank[np.maximum(codes, 0)] if len(keys) else 0).astype(np.int64)


def user_codes(visits: pd.DataFrame) -> np.ndarray:
    """One code per (city, user) pair of a validated visit frame, in order of first appearance.

    The codes of ``pd.MultiIndex.from_arrays([visits[CITY], visits[USER]]).factorize()``,
    computed from the codes of each column instead of a tuple per row (the tuples took 9.5 of
    the 125 ms of a profiled ``predict`` call on 2,241 NYC visits).

    Parameters
    ----------
    visits : DataFrame of shape (n_rows, n_columns)
        With the ``city`` and ``user_id`` columns, neither missing (as
        :func:`validate_visits` returns them).

    Returns
    -------
    ndarray of int64, shape (n_rows,)
        0 for the rows of the first (city, user) pair, 1 for the next pair met, ...
    """
    city = pd.factorize(visits[CITY])[0].astype(np.int64)
    user, users = pd.factorize(visits[USER])
    return pd.factorize(city * len(users) + user)[0].astype(np.int64)


def user_text(u) -> str:
    """One user id as text, a number by its value (see :func:`user_order`).

    Parameters
    ----------
    u : hashable
        A user id.

    Returns
    -------
    str
        ``"7"`` for ``7``, ``7.0``, ``"7"`` and ``"7.0"``; the text of other ids.
    """
    key = _user_key(u)
    return str(key[1]) if key[0] == 0 else key[2]


def _user_key(u) -> tuple:
    """Sort key of one user id (see :func:`user_order`): numbers (also written as text) by
    value, then the rest by text; the type's name last, so that distinct ids of one text (``b"a"``
    and ``"b'a'"``, a Timestamp and its text) never tie."""
    kind = type(u).__name__
    # bools count as 0 / 1, as pd.factorize merges True with 1 into one user
    if isinstance(u, (numbers.Real, np.bool_)):
        if float(u).is_integer():
            return (0, int(u), str(int(u)), 0, kind)
        return (0, float(u), str(u), 0, kind)
    text = str(u)
    value = _number(text)
    if value is not None:
        return (0, value, text, 1, kind)
    return (1, 0, text, 1, kind)


def _number(text: str):
    """The finite number ``text`` writes (an int for whole numbers, as CSV readers give
    ``"7"``, ``" 7"`` or ``"7.0"``), or None."""
    text = text.strip()
    try:
        if _WHOLE_NUMBER.fullmatch(text):
            return int(text)
        value = float(text)
    except ValueError:          # not a number, or an integer of thousands of digits
        return None
    if not np.isfinite(value):
        return None
    return int(value) if value.is_integer() else value


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def row_hash(out: pd.DataFrame) -> pd.Series:
    """A uint64 per row from every column's value (never the index): a tie-break that makes
    the order of rows at the same time independent of their input order.

    Parameters
    ----------
    out : DataFrame of shape (n_rows, n_columns)

    Returns
    -------
    Series of uint64, length n_rows
    """
    try:
        return pd.util.hash_pandas_object(out, index=False)
    except TypeError:  # unhashable values (lists, dicts)
        return pd.util.hash_pandas_object(_as_hashable(out), index=False)


def _as_hashable(out: pd.DataFrame) -> pd.DataFrame:
    """``out`` with each column of unhashable values (lists, dicts) written as text tagged with
    each value's type (``[1]`` and ``"[1]"`` stay apart); the other columns as they are."""
    columns = {}
    for i in range(out.shape[1]):
        column = out.iloc[:, i]
        try:
            pd.util.hash_pandas_object(column, index=False)
        except TypeError:
            column = column.map(lambda v: f"{type(v).__name__}:{v!r}")
        columns[i] = column
    return pd.DataFrame(columns, index=out.index)


def duplicated_rows(out: pd.DataFrame, content=None) -> np.ndarray:
    """True for rows whose every column equals that of an earlier row.

    ``content``: the rows' :func:`row_hash` when ``out`` is sorted by it within equal keys
    (exact duplicates are then neighbours with equal hashes: only those are compared).
    """
    candidates = np.ones(len(out), dtype=bool)
    if content is not None:
        h = content.to_numpy()
        candidates = np.r_[False, h[1:] == h[:-1]]
        if not candidates.any():
            return candidates
        candidates |= np.r_[candidates[1:], False]  # and the rows they may repeat
    sub = out.iloc[np.flatnonzero(candidates)]
    try:
        dup = sub.duplicated(keep="first").to_numpy()
    except TypeError:
        dup = _as_hashable(sub).duplicated(keep="first").to_numpy()
    out_mask = np.zeros(len(out), dtype=bool)
    out_mask[np.flatnonzero(candidates)[dup]] = True
    return out_mask


def _handle_duplicates(out: pd.DataFrame, duplicates: str, content=None) -> pd.DataFrame:
    """Report (and for ``"drop"`` remove) exact duplicate rows of a sorted visit frame."""
    if duplicates not in _DUPLICATES:
        raise ValueError(f"duplicates must be one of {_DUPLICATES}, got {duplicates!r}.")
    if duplicates == "ignore":
        return out
    dup = duplicated_rows(out, content)
    if not dup.any():
        return out
    n = int(dup.sum())
    rows = f"{n} exact duplicate row{'' if n == 1 else 's'} (every column equal to another row) at rows {format_rows(out.index, dup)}"
    if duplicates == "drop":
        warnings.warn(f"{rows} of {len(out)} visits are dropped: each visit counts once.",
                      DataWarning, stacklevel=3)
        return out[~dup]
    warnings.warn(
        f"{rows} of {len(out)} visits: they are kept, so that every row keeps its prediction, and "
        f"count as separate visits in histories and windows. If they are copies of one visit, drop "
        f"them first: X.drop_duplicates()",
        DataWarning,
        stacklevel=3,
    )
    return out


def _check_locations(out: pd.DataFrame, what: str = "visits") -> None:
    """Validate (and cast in place) each city's location form: lat/lon in degrees within
    range and within the latitudes UTM covers, or whole-number x/y grid cells with
    ``|x|, |y| < 2**30``. (Outliers of a city, far from its centre or at null island, are
    left to the encoder, which leaves them out of the city's grid and reports them.)"""
    lforms = _forms_per_city(out, "location")
    ll_rows = np.isin(out[CITY].to_numpy(), [c for c, f in lforms.items() if f == "latlon"])
    if ll_rows.any():
        sub = out.iloc[np.flatnonzero(ll_rows)].copy()
        for col in (LAT, LON):
            sub[col] = _numeric(sub, col)
            _no_missing(sub, col)
        lat, lon = sub[LAT].to_numpy(), sub[LON].to_numpy()
        # swapped columns: most latitudes out of range (a few are typos, which the range names)
        if (np.abs(lat) > 90).mean() > 0.5 and (np.abs(lon) <= 90).all() and (np.abs(lat) <= 180).all():
            bad = np.abs(lat) > 90
            raise SchemaError(
                f"column {LAT!r} has {int(bad.sum())} value{'' if bad.sum() == 1 else 's'} "
                f"outside -90..90 degrees at rows {format_rows(sub.index, bad)}, while every {LON!r} "
                f"is within -90..90: latitude and longitude look swapped; fix with "
                f"X.rename(columns={{{LAT!r}: {LON!r}, {LON!r}: {LAT!r}}})"
            )
        _check_range(sub, LAT, -90, 90, "degrees")
        _check_range(sub, LON, -180, 180, "degrees")
        _check_utm_latitudes(sub)
        if ll_rows.all():
            out[LAT], out[LON] = sub[LAT], sub[LON]
    if not ll_rows.all():
        sub = out.iloc[np.flatnonzero(~ll_rows)].copy()
        hint = (f" ({'x'!r}/{'y'!r} are grid cell indices, e.g. 1..200 for YJMob100K; give "
                f"coordinates in degrees as {LAT!r}/{LON!r} instead)")
        for col, desc in (("x", "grid column"), ("y", "grid row")):
            _integral(sub, col, desc, hint)
            big = (np.abs(sub[col].to_numpy()) >= MAX_CELL_INDEX)
            if big.any():
                raise SchemaError(
                    f"column {col!r} ({desc}) has {int(big.sum())} value"
                    f"{'' if big.sum() == 1 else 's'} of magnitude 2**30 or more at rows "
                    f"{format_rows(sub.index, big)}: grid cell indices must lie within "
                    f"-2**30..2**30{hint}"
                )
        if not ll_rows.any():
            out["x"], out["y"] = sub["x"], sub["y"]




def _check_utm_latitudes(sub: pd.DataFrame) -> None:
    """Raise for latitudes beyond the UTM band (polar caps): no city grid can be laid there."""
    from .spatial import UTM_LATITUDES  # local import: keeps pyproj out of ``import schema``

    lo, hi = UTM_LATITUDES
    _check_range(sub, LAT, lo, hi, "degrees, the latitudes UTM covers,",
                 fix="each city is projected onto a UTM zone, which the polar caps do not have. Drop "
                     f"those rows (a placeholder such as 90?), or give polar data as {'x'!r}/{'y'!r} grid cells")


def _forms_per_city(out: pd.DataFrame, kind: str) -> dict:
    """The time or location form of each city: the first form whose columns are complete
    for all of the city's rows (``started_at`` before ``day``/``slot``, ``lat``/``lon``
    before ``x``/``y``); frames of several cities may use different forms per city."""
    first, second = ((("datetime", (STARTED_AT,)), ("binned", (DAY, SLOT))) if kind == "time"
                     else (("latlon", (LAT, LON)), ("grid", ("x", "y"))))
    forms = {}
    for city, rows in out.groupby(CITY, sort=False):
        for name, cols in (first, second):
            if all(c in rows.columns for c in cols) and rows[list(cols)].notna().all().all():
                forms[city] = name
                break
        else:
            # report against the form the frame offers first, so messages name the column
            name, cols = first if all(c in out.columns for c in first[1]) else second
            forms[city] = name
    return forms


def _instant_ns(parsed: pd.Series) -> np.ndarray:
    """int64 nanoseconds of parsed times (UTC instant if tz-aware, else naive wall clock)."""
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]").to_numpy().astype(np.int64)


def validate_pois(P: pd.DataFrame) -> pd.DataFrame:
    """Check a POI frame and return a clean copy.

    Parameters
    ----------
    P : DataFrame of shape (n_pois, n_columns)
        One row per POI (or per grid cell and category). Required: one location form
        (``lat``/``lon`` float WGS84 degrees, or ``x``/``y`` int grid cells) and ``category``
        (a name of :data:`trajmoe.taxonomy.TAXONOMY`; map raw names with
        :func:`trajmoe.taxonomy.map_categories`). Optional: ``city`` (str, default ``"city"``),
        ``count`` (non-negative int, default 1, e.g. the number of POIs of that category in the
        cell), ``source_category`` (raw name); other columns are kept.

    Returns
    -------
    pois : DataFrame of shape (n_pois, n_columns + k)
        A new frame (``P`` is never modified) with ``city`` (str) and ``count`` (int64) present,
        coordinates cast (float64 or int64), sorted stably by city, original index labels kept.

    Raises
    ------
    SchemaError
        If ``P`` is not a DataFrame, is empty, lacks a location form or ``category``; if
        coordinates are NaN or out of range; if ``category`` holds missing values or names
        outside the taxonomy; if ``count`` is missing, negative or not a whole number.

    References
    ----------
    Schema of the TrajMoE location features: Han, Yuan, Chen, Ding, Li, "TrajMoE: Spatially-Aware
    Mixture of Experts for Unified Human Mobility Modeling", arXiv 2505.18670, 2025 (34
    OpenStreetMap-derived categories).
    """
    _check_frame(P, "P")
    location_form(P)
    if CATEGORY not in P.columns:
        raise SchemaError(
            f"missing required column {CATEGORY!r} (a taxonomy name): map raw category names "
            f"with trajmoe.taxonomy.map_categories(names, source) and store the result as "
            f"P[{CATEGORY!r}]; columns present: {[str(c) for c in P.columns]}"
        )
    out = P.copy()
    _city(out)
    _check_locations(out, "POIs")

    _no_missing(
        out,
        CATEGORY,
        fix="these are unmapped names: extend the mapping (map_categories(..., source=dict)) "
        "or drop those rows",
    )
    cat = out[CATEGORY].astype(str)
    unknown = ~cat.isin(TAXONOMY).to_numpy()
    if unknown.any():
        counts = cat[unknown].value_counts()
        names = ", ".join(f"{k!r} ({v})" for k, v in counts.head(10).items())
        raise SchemaError(
            f"column {CATEGORY!r} has {int(unknown.sum())} value"
            f"{'' if unknown.sum() == 1 else 's'} outside the taxonomy at rows "
            f"{format_rows(out.index, unknown)}: {names}; map raw names with "
            f"trajmoe.taxonomy.map_categories (valid names: trajmoe.taxonomy.TAXONOMY)"
        )
    out[CATEGORY] = cat
    if COUNT not in out.columns:
        out[COUNT] = np.ones(len(out), dtype="int64")
    else:
        _integral(out, COUNT, "number of POIs")
        neg = (out[COUNT] < 0).to_numpy()
        if neg.any():
            raise SchemaError(
                f"column {COUNT!r} has {int(neg.sum())} negative value"
                f"{'' if neg.sum() == 1 else 's'} at rows {format_rows(out.index, neg)}: counts of "
                f"POIs must be >= 0; fix or drop them"
            )
    return _stable_sort(out, [out[CITY]])
