"""What the frame-to-frame pipeline steps of :mod:`trajmoe.preprocessing` share."""

from __future__ import annotations

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from ..exceptions import SchemaError
from ..schema import CITY, check_day_month, format_rows, parse_one_format

__all__ = ["FrameTransformer", "no_fit_params", "parse_times"]


def _is_aware(value):
    """Whether one time value (a Timestamp, datetime or string) carries a UTC offset."""
    try:
        return pd.Timestamp(value).tzinfo is not None
    except (ValueError, TypeError, OverflowError):
        return False


def parse_times(values, col):
    """An object or string column of times as datetime64 (NaT where a value does not parse).

    Values with different UTC offsets are instants, each read in its own offset (the result
    is in UTC). Naive and tz-aware values mixed raise a SchemaError naming the naive rows:
    pandas would make the tz-aware ones NaT, or read the naive ones as UTC. Numbers raise a
    SchemaError too: pandas reads them as nanoseconds since 1970, not as the Unix seconds or
    milliseconds they usually are.
    """
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise SchemaError(
            f"column {col!r} has dtype {values.dtype}, not datetime64: convert it, e.g. "
            f"pd.to_datetime(X[{col!r}], unit='s', utc=True) for Unix seconds")
    parsed = parse_one_format(values)
    if parsed is not None:
        return parsed
    check_day_month(values, col)                             # value by value: both conventions mixed?
    try:
        parsed = pd.to_datetime(values, errors="coerce", format="mixed")
        if not (parsed.isna() & values.notna()).any():
            return parsed
    except (ValueError, TypeError, OverflowError):  # different offsets, or naive and aware mixed
        pass
    utc = pd.to_datetime(values, errors="coerce", format="mixed", utc=True)
    valid = utc.notna().to_numpy()
    aware = valid & values.map(_is_aware).to_numpy(dtype=bool)
    naive = valid & ~aware
    if aware.any() and naive.any():
        raise SchemaError(
            f"column {col!r} mixes tz-aware and naive times: {int(naive.sum())} naive value"
            f"{'' if naive.sum() == 1 else 's'} at rows {format_rows(values.index, naive)} next to "
            f"{int(aware.sum())} tz-aware ones. Make them all tz-aware (e.g. "
            f"pd.Timestamp(t).tz_localize(<time zone>) for the naive ones) or all naive local times")
    if aware.any() or parsed is None:
        return utc if aware.any() else pd.to_datetime(values, errors="coerce", format="mixed")
    return parsed


def localize_naive(times, tz, col):
    """Naive wall-clock times read in the time zone ``tz`` (tz-aware; NaT stays NaT).

    Raises
    ------
    SchemaError
        For times in the hour a daylight-saving change of ``tz`` repeats (autumn) or skips
        (spring): they name no single instant or none at all. The message gives the rows, an
        example and the fix (tz-aware times, with their UTC offset).
    """
    local = times.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    lost = (local.isna() & times.notna()).to_numpy()
    if lost.any():
        example = times[lost].iloc[0]
        raise SchemaError(
            f"column {col!r} has {int(lost.sum())} naive time{'' if lost.sum() == 1 else 's'} in an hour that a "
            f"daylight-saving change of {tz} repeats or skips, at rows {format_rows(times.index, lost)} (e.g. "
            f"{example}): such a wall-clock time names two instants or none. Give tz-aware times (with their UTC "
            f"offset, e.g. ISO strings '...+02:00') or UTC times, so that each names one instant")
    return local


def check_cities_given(X, why):
    """SchemaError naming the rows of X whose ``city`` is missing (``why``: what the city is
    needed for); nothing when X has no ``city`` column (one city)."""
    if CITY not in X.columns or not X[CITY].isna().any():
        return
    missing = X[CITY].isna().to_numpy()
    raise SchemaError(f"column {CITY!r} has {int(missing.sum())} missing value{'' if missing.sum() == 1 else 's'} "
                      f"at rows {format_rows(X.index, missing)}: every visit needs a city ({why}); fill or drop them")


def no_fit_params(step, fit_params):
    """Raise a ValueError naming ``fit_params`` (a stateless step takes none; ignoring them
    would hide a typo such as ``Pipeline.fit(X, shortuserfilter__min_visit=3)``)."""
    if fit_params:
        name = type(step).__name__
        raise ValueError(
            f"{name}.fit_transform takes no fit parameters, got {sorted(fit_params)}: set the "
            f"step's parameters with {name}(...) or set_params (in a pipeline: "
            f"pipe.set_params({name.lower()}__<parameter>=...))")


class FrameOutput:
    """Mixin of the steps whose output is always a visit frame: ``set_output`` has nothing to
    configure, and is accepted so that ``Pipeline.set_output`` works."""

    def set_output(self, *, transform=None):
        """Accept an output configuration: the output is a DataFrame whatever it says.

        Parameters
        ----------
        transform : {"default", "pandas", "polars"} or None, default None
            Ignored.

        Returns
        -------
        self
        """
        return self


class FrameTransformer(FrameOutput, TransformerMixin, BaseEstimator):
    """Base class of the steps that take a visit frame and return a visit frame.

    Stateless: ``fit`` checks the parameters, ``transform`` works on any frame. The output is
    always a DataFrame (:class:`FrameOutput`).
    """

    def fit(self, X, y=None):
        """Check the parameters (nothing is learned).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        return self

    def fit_transform(self, X, y=None, **fit_params):
        """``fit(X).transform(X)``; a fit parameter raises a ValueError (none is taken).

        Parameters
        ----------
        X, y : as in :meth:`fit`
        **fit_params : dict
            None: a ValueError names any given.

        Returns
        -------
        DataFrame
            As ``transform``.
        """
        no_fit_params(self, fit_params)
        return self.fit(X).transform(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False       # rows are visits of a DataFrame
        tags.input_tags.string = True
        tags.requires_fit = False
        return tags
