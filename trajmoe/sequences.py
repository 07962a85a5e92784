"""From visit rows to windows of tokens: local time features and windows (numpy; the torch
dataset and single-city batch loaders are in :mod:`trajmoe.nn.data`).

Per token: city-local location id, half-hour slot of the day (0..47), day of week (1..7,
0 = padding), gap since the previous stay of the window in half-hour slots (0..95,
clamped). Targets: the next token's location and gap (teacher forcing at every position).

References
----------
Han et al., arXiv 2505.18670, section 3; docs/method.rst, "Task, grid and windows" (3-day windows, at least 5
stays, at most 144 tokens; training windows slide by one day, evaluation windows do not
overlap).
"""

from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._constants import IGNORE_INDEX, N_GAPS, N_SLOTS, PAD
from .exceptions import SchemaError
from .schema import CITY, DAY, DEFAULT_CITY, SLOT, STARTED_AT, warn_if_local_time_unknown

__all__ = ["time_features", "time_forms", "window_bounds", "Windows", "make_windows", "token_batches", "N_SLOTS", "N_GAPS", "PAD",
           "IGNORE_INDEX"]

_EPOCH = pd.Timestamp("1970-01-01")


def time_features(visits, city_tz=None):
    """Local-time features of every visit.

    Parameters
    ----------
    visits : DataFrame of shape (n_visits, n_columns)
        Validated canonical visit frame (:func:`trajmoe.schema.validate_visits`). A city
        uses ``started_at`` when all its rows have one, else ``day``/``slot``.
    city_tz : dict of str -> str, optional
        Time zone per city: tz-aware ``started_at`` values are converted to it before the
        local wall-clock time is read. Without it, tz-aware values are read in their own
        time zone and naive values are taken as local time.

    Returns
    -------
    DataFrame of shape (n_visits, 4), index of ``visits``
        ``minute`` (int64, local minutes since 1970-01-01, or ``day * 1440 + slot * 30``),
        ``day`` (int64 local day number), ``slot`` (int64 0..47), ``dow`` (int64, 1 = Monday
        .. 7 = Sunday; for day-index data ``day % 7 + 1`` as the weekday of day 0 is unknown).

    Raises
    ------
    trajmoe.schema.SchemaError
        If a city has neither a complete ``started_at`` nor ``day``/``slot``.

    Warns
    -----
    trajmoe.exceptions.DataWarning
        For a city without a ``city_tz`` zone whose tz-aware times are all in UTC, or carry
        UTC offsets more than an hour apart (:func:`trajmoe.schema.warn_if_local_time_unknown`).
    """
    minute = np.empty(len(visits), np.int64)
    dow = np.empty(len(visits), np.int64)
    city_tz = city_tz or {}
    # positions, not labels: the index of visits may repeat labels
    for city, pos in visits.groupby(CITY, sort=False).indices.items():
        rows = visits.iloc[pos]
        if _time_form(rows) == STARTED_AT:
            if city_tz.get(city) is None:
                warn_if_local_time_unknown(city, rows[STARTED_AT])
            stamps = _local_wall_clock(rows[STARTED_AT], city_tz.get(city))
            minute[pos] = ((stamps - _EPOCH) // pd.Timedelta(minutes=1)).to_numpy(np.int64)
            dow[pos] = stamps.dt.day_of_week.to_numpy(np.int64) + 1
        elif DAY in rows and SLOT in rows and rows[DAY].notna().all() and rows[SLOT].notna().all():
            day = rows[DAY].to_numpy(np.int64)
            minute[pos] = day * 1440 + rows[SLOT].to_numpy(np.int64) * 30
            dow[pos] = day % 7 + 1
        else:
            raise SchemaError(
                f"City {city!r}: no complete time form. Give every row of a city either "
                f"'{STARTED_AT}' or both '{DAY}' and '{SLOT}'.")
    day = minute // 1440
    return pd.DataFrame({"minute": minute, "day": day, "slot": (minute % 1440) // 30, "dow": dow},
                        index=visits.index)


def time_forms(visits):
    """The time form each city of a visit frame is read in by :func:`time_features`.

    Parameters
    ----------
    visits : DataFrame of shape (n_visits, n_columns)
        Visit frame (a missing ``city`` column is one city, ``"city"``).

    Returns
    -------
    dict of str -> str
        ``"started_at"`` where every row of the city has one, else ``"day/slot"``. The two
        number weekdays differently (the calendar, or ``day % 7 + 1``).
    """
    cities = visits[CITY].astype(str) if CITY in visits else pd.Series(DEFAULT_CITY, index=visits.index)
    return {city: _time_form(visits.iloc[pos]) for city, pos in cities.groupby(cities.to_numpy(), sort=False).indices.items()}


def _time_form(rows):
    return STARTED_AT if STARTED_AT in rows and rows[STARTED_AT].notna().all() else "day/slot"


def _local_wall_clock(values, tz=None):
    """Naive local wall-clock times of a city's ``started_at`` values.

    Naive values are already local (never localised: that would fail on the ambiguous
    or nonexistent hours of DST changes). Tz-aware values are converted to ``tz`` when
    given, else read in their own zone; an object column whose values carry different
    zones is handled value by value.
    """
    try:
        stamps = pd.to_datetime(values)
    except (ValueError, TypeError):  # tz-aware values of different zones
        if tz is not None:
            return pd.to_datetime(values, utc=True).dt.tz_convert(tz).dt.tz_localize(None)
        return pd.to_datetime(values.map(lambda v: v.tz_localize(None) if v.tzinfo is not None else v))
    if stamps.dt.tz is not None:
        if tz is not None:
            stamps = stamps.dt.tz_convert(tz)
        stamps = stamps.dt.tz_localize(None)
    return stamps


def window_bounds(user_key, day, window_days=3, stride_days=None, max_tokens=144, min_stays=1):
    """Row ranges of the windows of every user.

    Parameters
    ----------
    user_key : ndarray of int64, shape (n,)
        User code per row; rows are sorted by user then time.
    day : ndarray of int64, shape (n,)
        Local day number per row.
    window_days : int, default 3
        Length of a window in days.
    stride_days : int or None, default None
        Start a window every ``stride_days`` days from the user's first day (sliding
        windows, duplicates removed); None = non-overlapping windows
        ``[first + k * window_days, first + (k + 1) * window_days)``, which put every row
        in exactly one window.
    max_tokens : int, default 144
        Windows longer than this are cut into consecutive pieces of at most this length.
    min_stays : int, default 1
        Windows (before cutting) with fewer rows are dropped.

    Returns
    -------
    ndarray of int64, shape (n_windows, 2)
        ``[start, stop)`` row positions, sorted.

    Warns
    -----
    trajmoe.exceptions.ShortWindowsWarning
        When ``min_stays`` leaves visits in no window: how many visits, and how many users
        have no window at all (a :class:`~trajmoe.exceptions.DataWarning`).

    References
    ----------
    docs/method.rst, "Task, grid and windows".
    """
    user_key = np.asarray(user_key, np.int64)
    day = np.asarray(day, np.int64)
    if len(day) == 0:
        return np.zeros((0, 2), np.int64)
    first_row = np.r_[0, np.flatnonzero(np.diff(user_key)) + 1]
    last_row = np.r_[first_row[1:], len(day)] - 1
    first_day = np.repeat(day[first_row], np.diff(np.r_[first_row, len(day)]))
    offset = day - first_day
    # keys sort like the rows: user rank, then day offset
    user_rank = np.repeat(np.arange(len(first_row)), np.diff(np.r_[first_row, len(day)]))
    span = int(offset.max()) + window_days + 2
    key = user_rank * span + offset
    if stride_days is None:
        window = offset // window_days
        wkey = user_rank * span + window
        starts = np.r_[0, np.flatnonzero(np.diff(wkey)) + 1]
        bounds = np.column_stack([starts, np.r_[starts[1:], len(day)]])
    else:
        n_starts = (day[last_row] - day[first_row]) // stride_days + 1
        owner = np.repeat(np.arange(len(first_row)), n_starts)
        k = np.arange(n_starts.sum()) - np.repeat(np.cumsum(n_starts) - n_starts, n_starts)
        lo = owner * span + k * stride_days
        bounds = np.column_stack([np.searchsorted(key, lo), np.searchsorted(key, lo + window_days)])
        bounds = np.unique(bounds[bounds[:, 1] > bounds[:, 0]], axis=0)
    long_enough = (bounds[:, 1] - bounds[:, 0]) >= min_stays
    if not long_enough.all():
        kind = ("non-overlapping windows, as scored" if stride_days is None
                else f"training windows starting every {stride_days} day{'s' if stride_days != 1 else ''}")
        _report_short_windows(bounds[long_enough], len(day), user_key, min_stays, window_days, kind,
                              "not scored" if stride_days is None else "not trained on")
    bounds = bounds[long_enough]
    length = bounds[:, 1] - bounds[:, 0]
    pieces = -(-length // max_tokens)
    piece = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    start = np.repeat(bounds[:, 0], pieces) + piece * max_tokens
    stop = np.minimum(start + max_tokens, np.repeat(bounds[:, 1], pieces))
    out = np.column_stack([start, stop]).astype(np.int64)
    # overlapping (sliding) windows can be cut into the same pieces: keep each once, sorted
    return np.unique(out, axis=0) if stride_days is not None else out


def _report_short_windows(kept, n_rows, user_key, min_stays, window_days, kind, unused):
    """ShortWindowsWarning: how many visits and users ``min_stays`` leaves without a window of ``kind``
    (``unused``: what that means for them, "not scored" or "not trained on")."""
    import warnings

    from ._warnings import caller_stacklevel
    from .exceptions import ShortWindowsWarning

    covered = np.zeros(n_rows + 1, np.int64)
    np.add.at(covered, kept[:, 0], 1)
    np.add.at(covered, kept[:, 1], -1)
    covered = np.cumsum(covered[:-1]) > 0
    n_out = int((~covered).sum())
    if not n_out:
        return
    users = np.unique(user_key)
    left = np.setdiff1d(users, np.unique(user_key[covered]))
    warnings.warn(ShortWindowsWarning(
        f"min_stays={min_stays}: {n_out} of {n_rows} visits are in no window of at least {min_stays} "
        f"visits within window_days={window_days} days and are left out ({unused}); "
        f"{len(left)} of {len(users)} users have no such window at all. Lower min_stays or raise "
        f"window_days to use them. ({kind.capitalize()}.)",
        n_left_out=n_out, n_visits=n_rows, n_users_without=len(left), n_users=len(users), min_stays=min_stays,
        window_days=window_days, kind=kind), stacklevel=caller_stacklevel())


@dataclass
class Windows:
    """Padded token matrices of a set of windows (all one city or several).

    Attributes
    ----------
    location : ndarray of int64, shape (n_windows, L)
        City-local location ids, ``n_locations`` of the city for out-of-vocabulary cells,
        ``PAD`` (-1) after the end of the window.
    slot, dow, gap : ndarray of int64, shape (n_windows, L)
        Time features (0 at padding).
    next_location, next_gap : ndarray of int64, shape (n_windows, L)
        Targets; ``IGNORE_INDEX`` (-100) where the next token is absent (last position, padding)
        or out of the vocabulary.
    city : ndarray of int64, shape (n_windows,)
        City index of every window.
    row : ndarray of int64, shape (n_windows, L)
        Position in the visit frame of every token (-1 at padding).
    target_row : ndarray of int64, shape (n_windows, L)
        Position of the visit that is the target of every token (-1 where there is none;
        set also for out-of-vocabulary targets, which count as misses in evaluation).
    """

    location: np.ndarray
    slot: np.ndarray
    dow: np.ndarray
    gap: np.ndarray
    next_location: np.ndarray
    next_gap: np.ndarray
    city: np.ndarray
    row: np.ndarray
    target_row: np.ndarray

    def __len__(self):
        return len(self.city)

    def subset(self, mask):
        """The windows where ``mask`` is True (every per-window array, extra ones included).

        Parameters
        ----------
        mask : ndarray of bool, shape (n_windows,)

        Returns
        -------
        Windows
        """
        out = copy.copy(self)
        for name, value in vars(self).items():
            setattr(out, name, value[mask])
        return out


def make_windows(location, times, city_index, n_locations, bounds):
    """Gather windows of tokens.

    Parameters
    ----------
    location : ndarray of int64, shape (n,)
        City-local location id per row (-1 outside the vocabulary).
    times : DataFrame of shape (n, 4)
        :func:`time_features` of the rows.
    city_index : ndarray of int64, shape (n,)
        City index of every row.
    n_locations : ndarray of int64, shape (n_cities,)
        Vocabulary size per city (the out-of-vocabulary id of that city).
    bounds : ndarray of int64, shape (n_windows, 2)
        From :func:`window_bounds`.

    Returns
    -------
    Windows
    """
    n_windows = len(bounds)
    length = bounds[:, 1] - bounds[:, 0]
    width = int(length.max()) if n_windows else 1
    offs = np.arange(width)
    row = bounds[:, :1] + offs
    valid = offs < length[:, None]
    row = np.where(valid, row, -1)
    safe = np.maximum(row, 0)
    city = city_index[bounds[:, 0]] if n_windows else np.zeros(0, np.int64)
    oov = n_locations[city][:, None]
    loc = location[safe]
    loc = np.where(loc < 0, oov, loc)
    minute = times["minute"].to_numpy()[safe]
    gap = np.clip(np.rint(np.diff(minute, axis=1, prepend=minute[:, :1]) / 30.0), 0, N_GAPS - 1).astype(np.int64)
    gap[:, 0] = 0
    has_next = np.zeros_like(valid)
    has_next[:, :-1] = valid[:, 1:]
    next_loc = np.full_like(loc, IGNORE_INDEX)
    next_loc[:, :-1] = loc[:, 1:]
    target_row = np.where(has_next, np.roll(row, -1, axis=1), -1)
    next_loc = np.where(has_next & (next_loc < oov), next_loc, IGNORE_INDEX)
    next_gap = np.full_like(gap, IGNORE_INDEX)
    next_gap[:, :-1] = gap[:, 1:]
    next_gap = np.where(has_next, next_gap, IGNORE_INDEX)
    return Windows(
        location=np.where(valid, loc, PAD),
        slot=np.where(valid, times["slot"].to_numpy()[safe], 0),
        dow=np.where(valid, times["dow"].to_numpy()[safe], 0),
        gap=np.where(valid, gap, 0),
        next_location=next_loc, next_gap=next_gap, city=city.astype(np.int64),
        row=row, target_row=target_row)


def token_batches(lengths, max_tokens, batch_cost=0):
    """Split windows sorted longest first into batches of at most ``max_tokens`` padded tokens.

    A batch is padded to the length of its longest window (its first), so it holds ``n_windows x
    longest`` tokens. The batches minimise the padded tokens plus ``batch_cost`` per batch (the
    fixed cost of running a batch, in tokens' worth) over the partitions in which a batch holds
    whole runs of equal lengths that fit the budget together, or a budget's worth of one run
    (dynamic programming over the runs). With check-ins, many short windows share a few
    batches instead of being padded to the length of a long window of the same batch; with GPS
    stay points, the long windows fill batches of their own. Each batch is bounded (its
    activations and any [tokens, cells] scores) whatever the data.

    Parameters
    ----------
    lengths : ndarray of int, shape (n_windows,)
        Visits per window, non-increasing (windows sorted longest first, as the estimators
        score them); lengths below 1 count as 1.
    max_tokens : int
        Tokens (windows x padded length) a batch may hold, >= 1. A window longer than that is
        a batch of its own.
    batch_cost : int or float, default 0
        What a batch costs beyond its padded tokens, in tokens, >= 0. 0: the fewest padded
        tokens, whatever the number of batches; ``inf`` (or any cost above the padded tokens of
        all windows): the fewest batches, then the fewest padded tokens. The estimators use 256
        (on their small network a batch's fixed cost is about as long as 250 padded tokens on a
        CPU).

    Returns
    -------
    list of (slice, int)
        Per batch, the windows it holds (a slice of ``lengths``, consecutive, covering all of
        them in order) and its padded length (at least 1).

    Raises
    ------
    ValueError
        If ``max_tokens`` < 1, ``batch_cost`` < 0, or ``lengths`` increase somewhere (sort
        the windows longest first).

    References
    ----------
    .. [1] Ott et al., "fairseq: A Fast, Extensible Toolkit for Sequence Modeling", NAACL 2019
       (demonstrations): batches bounded by a number of tokens (``--max-tokens``) over
       sequences sorted by length, instead of a number of sequences.

    Examples
    --------
    >>> token_batches(np.array([5, 3, 2, 2, 1]), max_tokens=6)
    [(slice(0, 1, None), 5), (slice(1, 2, None), 3), (slice(2, 4, None), 2), (slice(4, 5, None), 1)]
    >>> token_batches(np.array([5, 3, 2, 2, 1]), max_tokens=6, batch_cost=2)
    [(slice(0, 1, None), 5), (slice(1, 2, None), 3), (slice(2, 5, None), 2)]
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, numbers.Integral) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}.")
    if isinstance(batch_cost, bool) or not isinstance(batch_cost, numbers.Real) or not batch_cost >= 0:
        raise ValueError(f"batch_cost must be a number >= 0, got {batch_cost!r}.")
    lengths = np.maximum(np.asarray(lengths, np.int64), 1)
    # a cost above the padded tokens of all windows (at most n_windows x the longest) orders the
    # partitions as any higher one does (fewest batches first), and keeps the sums finite
    batch_cost = min(float(batch_cost), float(len(lengths)) * float(lengths.max(initial=1)) + 1.0)
    if np.any(np.diff(lengths) > 0):
        at = int(np.flatnonzero(np.diff(lengths) > 0)[0])
        raise ValueError(f"lengths must be non-increasing (windows sorted longest first), got {lengths[at]} then "
                         f"{lengths[at + 1]} at windows {at} and {at + 1}: sort them, e.g. np.sort(lengths)[::-1].")
    if not len(lengths):
        return []
    # runs of equal lengths: run r holds windows first[r]:first[r + 1], all of length width[r]
    first = np.flatnonzero(np.r_[True, lengths[1:] != lengths[:-1]])
    width = lengths[first]
    first = np.r_[first, len(lengths)]
    # best[j]: the least cost of the runs before j; a batch of runs i..j-1 must fit the budget,
    # except one run alone, cut into full batches
    best, start = np.zeros(len(width) + 1), np.zeros(len(width) + 1, np.int64)
    for j in range(1, len(width) + 1):
        n = first[j] - first[:j]
        cost = np.where(n * width[:j] <= max_tokens, best[:j] + batch_cost + n * width[:j], np.inf)
        alone = -(-n[-1] // max(max_tokens // width[j - 1], 1))
        cost[-1] = best[j - 1] + alone * batch_cost + n[-1] * width[j - 1]
        start[j] = int(np.argmin(cost))                 # ties: the fewest batches
        best[j] = cost[start[j]]
    out, j = [], len(width)
    while j:
        i = start[j]
        per = max(max_tokens // int(width[i]), 1)
        out += [(slice(a, min(a + per, first[j])), int(width[i])) for a in range(first[i], first[j], per)][::-1]
        j = i
    return [(slice(int(b.start), int(b.stop)), w) for b, w in out[::-1]]
