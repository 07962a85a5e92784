"""Tests of trajmoe.sequences: local time features, window bounds, token windows and single-city
batching, on hand-made arrays with hand-written expected values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trajmoe.schema import SchemaError, validate_visits
from trajmoe.nn.data import CityBatchLoader, CityBatchSampler, WindowDataset
from trajmoe.sequences import IGNORE_INDEX, N_GAPS, PAD, make_windows, time_features, token_batches, window_bounds

DAY_2012_04_02 = 15432  # days from 1970-01-01 to Monday 2012-04-02
DAY_2012_11_04 = 15648  # Sunday 2012-11-04 (end of DST in New York, 01:00-02:00 happens twice)


# --------------------------------------------------------------------------------------------------
# time_features
# --------------------------------------------------------------------------------------------------
def test_time_features_tz_aware_reads_local_wall_clock():
    X = pd.DataFrame({
        "user_id": [1, 1, 1],
        "started_at": pd.to_datetime(["2012-04-02 23:45", "2012-04-03 00:00", "2012-04-08 12:31"])
        .tz_localize("America/New_York"),
        "city": "nyc",
    })
    tf = time_features(X)
    assert tf.columns.tolist() == ["minute", "day", "slot", "dow"]
    assert tf.index.equals(X.index)
    # Monday 23:45 local (03:45 UTC on Tuesday): local day, slot 47, Monday = 1
    assert tf["day"].tolist() == [DAY_2012_04_02, DAY_2012_04_02 + 1, DAY_2012_04_02 + 6]
    assert tf["slot"].tolist() == [47, 0, 25]          # 23:45 -> 47, 00:00 -> 0, 12:31 -> 25
    assert tf["dow"].tolist() == [1, 2, 7]             # Monday, Tuesday, Sunday
    assert tf["minute"].tolist() == [DAY_2012_04_02 * 1440 + 23 * 60 + 45,
                                     (DAY_2012_04_02 + 1) * 1440,
                                     (DAY_2012_04_02 + 6) * 1440 + 12 * 60 + 31]
    assert all(tf[c].dtype == np.int64 for c in tf.columns)


def test_time_features_city_tz_converts_utc_values():
    # 03:45 UTC on Tuesday 2012-04-03 is 23:45 on Monday in New York (EDT, UTC-4)
    X = pd.DataFrame({"user_id": [1], "started_at": pd.to_datetime(["2012-04-03 03:45"]).tz_localize("UTC"),
                      "city": "nyc"})
    local = time_features(X, city_tz={"nyc": "America/New_York"})
    assert (local["day"][0], local["slot"][0], local["dow"][0]) == (DAY_2012_04_02, 47, 1)
    # without city_tz the values are read in their own zone (UTC): Tuesday 03:45
    own = time_features(X)
    assert (own["day"][0], own["slot"][0], own["dow"][0]) == (DAY_2012_04_02 + 1, 7, 2)
    # a time zone for another city changes nothing
    pd.testing.assert_frame_equal(time_features(X, city_tz={"paris": "Europe/Paris"}), own)


def test_time_features_naive_is_local_even_with_city_tz():
    # 01:30 on 2012-11-04 happens twice in New York: a naive local time must still be accepted
    X = pd.DataFrame({"user_id": [1, 1], "city": "nyc",
                      "started_at": pd.to_datetime(["2012-11-04 01:30", "2012-11-04 22:10"])})
    for tz in (None, {"nyc": "America/New_York"}):
        tf = time_features(X, city_tz=tz)
        assert tf["day"].tolist() == [DAY_2012_11_04, DAY_2012_11_04]
        assert tf["slot"].tolist() == [3, 44]
        assert tf["dow"].tolist() == [7, 7]


def test_time_features_values_with_different_time_zones():
    # an object column of tz-aware values in different zones (accepted by validate_visits)
    X = pd.DataFrame({"user_id": [1, 1], "city": "nyc", "started_at": [
        pd.Timestamp("2012-04-03 03:45", tz="UTC"), pd.Timestamp("2012-04-03 08:00", tz="America/New_York")]})
    X = validate_visits(X.assign(lat=40.7, lon=-74.0))
    local = time_features(X, city_tz={"nyc": "America/New_York"})
    assert local["slot"].tolist() == [47, 16] and local["dow"].tolist() == [1, 2]
    own = time_features(X)          # each value in its own zone: 03:45 UTC, 08:00 New York
    assert own["slot"].tolist() == [7, 16] and own["dow"].tolist() == [2, 2]


def test_time_features_day_slot():
    X = pd.DataFrame({"user_id": [1] * 5, "day": [0, 5, 6, 7, 13], "slot": [0, 5, 47, 16, 1]})
    X["city"] = "city"
    tf = time_features(X)
    assert tf["minute"].tolist() == [0, 5 * 1440 + 150, 6 * 1440 + 47 * 30, 7 * 1440 + 480, 13 * 1440 + 30]
    assert tf["day"].tolist() == [0, 5, 6, 7, 13]
    assert tf["slot"].tolist() == [0, 5, 47, 16, 1]
    assert tf["dow"].tolist() == [1, 6, 7, 1, 7]   # day % 7 + 1


def test_time_features_per_city_forms_and_non_unique_index():
    X = pd.DataFrame({
        "user_id": [1, 2, 1],
        "city": ["a", "b", "a"],
        "started_at": [pd.Timestamp("2012-04-02 08:00"), pd.NaT, pd.Timestamp("2012-04-02 09:10")],
        "day": [np.nan, 3.0, np.nan],
        "slot": [np.nan, 20.0, np.nan],
    }, index=[7, 7, 7])
    tf = time_features(X)
    assert tf.index.tolist() == [7, 7, 7]
    assert tf["day"].tolist() == [DAY_2012_04_02, 3, DAY_2012_04_02]
    assert tf["slot"].tolist() == [16, 20, 18]
    assert tf["dow"].tolist() == [1, 4, 1]


def test_time_features_without_time_form():
    X = pd.DataFrame({"user_id": [1], "city": ["a"], "day": [1]})
    with pytest.raises(SchemaError, match="'a'"):
        time_features(X)


# --------------------------------------------------------------------------------------------------
# window_bounds
# --------------------------------------------------------------------------------------------------
# rows sorted by user then time: user 0 on days 0, 0, 1, 3, 5; user 1 on days 2, 2, 9
USER = np.array([0, 0, 0, 0, 0, 1, 1, 1])
DAY = np.array([0, 0, 1, 3, 5, 2, 2, 9])


def bounds_list(b):
    assert b.dtype == np.int64 and b.ndim == 2 and b.shape[1] == 2
    return [tuple(r) for r in b.tolist()]


def test_non_overlapping_windows():
    # user 0: days [0,3) -> rows 0-2, [3,6) -> rows 3-4; user 1 (first day 2): [2,5) -> rows 5-6,
    # [8,11) -> row 7 ([5,8) is empty)
    assert bounds_list(window_bounds(USER, DAY)) == [(0, 3), (3, 5), (5, 7), (7, 8)]
    # 1-day windows
    assert bounds_list(window_bounds(USER, DAY, window_days=1)) == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 7), (7, 8)]


def test_sliding_windows_stride_one_day():
    # user 0 starts on days 0..5: [0,3)->0-2, [1,4)->2-3, [2,5)->3, [3,6)->3-4, [4,7)->4, [5,8)->4 (dup)
    # user 1 starts on days 2..9: [2,5)->5-6, [7,10) [8,11) [9,12) -> 7, others empty
    assert bounds_list(window_bounds(USER, DAY, stride_days=1)) == [
        (0, 3), (2, 4), (3, 4), (3, 5), (4, 5), (5, 7), (7, 8)]


def test_sliding_windows_stride_two_days():
    # user 0 starts 0, 2, 4: [0,3)->0-2, [2,5)->3, [4,7)->4; user 1 starts 2, 4, 6, 8: [2,5)->5-6,
    # [8,11)->7
    assert bounds_list(window_bounds(USER, DAY, stride_days=2)) == [(0, 3), (3, 4), (4, 5), (5, 7), (7, 8)]


def test_min_stays_drops_short_windows():
    assert bounds_list(window_bounds(USER, DAY, min_stays=2)) == [(0, 3), (3, 5), (5, 7)]
    assert bounds_list(window_bounds(USER, DAY, min_stays=3)) == [(0, 3)]
    assert bounds_list(window_bounds(USER, DAY, stride_days=1, min_stays=2)) == [(0, 3), (2, 4), (3, 5), (5, 7)]
    assert bounds_list(window_bounds(USER, DAY, min_stays=4)) == []


def test_max_tokens_cuts_windows_after_min_stays():
    assert bounds_list(window_bounds(USER, DAY, max_tokens=2)) == [(0, 2), (2, 3), (3, 5), (5, 7), (7, 8)]
    assert bounds_list(window_bounds(USER, DAY, max_tokens=1)) == [(i, i + 1) for i in range(8)]
    # min_stays counts the whole window before cutting: [0,3) survives min_stays=3 and is cut in two
    assert bounds_list(window_bounds(USER, DAY, max_tokens=2, min_stays=3)) == [(0, 2), (2, 3)]
    # overlapping windows [0,3) and [1,3) cut into single tokens: each piece once
    assert bounds_list(window_bounds([0, 0, 0], [17, 18, 18], window_days=2, stride_days=1, max_tokens=1)) == [
        (0, 1), (1, 2), (2, 3)]
    assert window_bounds(USER, DAY, stride_days=1, min_stays=10).shape == (0, 2)


def test_window_bounds_edge_cases():
    assert window_bounds([], []).shape == (0, 2)
    # one user, one day, 5 rows, max_tokens 144
    assert bounds_list(window_bounds([3] * 5, [10] * 5)) == [(0, 5)]
    # user keys need not start at 0 nor be consecutive, only grouped
    assert bounds_list(window_bounds([9, 9, 4, 4], [0, 4, 100, 101])) == [(0, 1), (1, 2), (2, 4)]


@st.composite
def users_and_days(draw):
    n_users = draw(st.integers(1, 5))
    user, day = [], []
    for u in range(n_users):
        days = sorted(draw(st.lists(st.integers(0, 20), min_size=1, max_size=15)))
        user += [u] * len(days)
        day += days
    return np.array(user), np.array(day)


@settings(max_examples=100, deadline=None)
@given(data=users_and_days(), window=st.integers(1, 4), max_tokens=st.integers(1, 6),
       stride=st.one_of(st.none(), st.integers(1, 3)))
def test_window_bounds_properties(data, window, max_tokens, stride):
    user, day = data
    b = window_bounds(user, day, window_days=window, stride_days=stride, max_tokens=max_tokens)
    assert np.all(b[:, 1] > b[:, 0]) and np.all(b[:, 1] - b[:, 0] <= max_tokens)
    assert np.all(b[:-1, 0] <= b[1:, 0])                         # sorted
    for start, stop in b:
        assert len(set(user[start:stop])) == 1                   # one user
        assert day[stop - 1] - day[start] < window               # within window_days
    covered = np.zeros(len(user), int)
    for start, stop in b:
        covered[start:stop] += 1
    if stride is None:
        assert np.all(covered == 1)                              # a partition of the rows
    elif stride <= window:
        assert np.all(covered >= 1)                              # no day left between windows
    assert len(np.unique(b, axis=0)) == len(b)                   # no window twice


# --------------------------------------------------------------------------------------------------
# make_windows
# --------------------------------------------------------------------------------------------------
def hand_windows():
    # user 0: cells 0, 1, OOV, 2 at day 0 slots 16, 17, 20 and day 2 slot 0
    # user 1: cells 1, 0 at day 0 slot 0 and day 5 slot 0
    location = np.array([0, 1, -1, 2, 1, 0])
    times = pd.DataFrame({"user_id": [0, 0, 0, 0, 1, 1], "city": "c",
                          "day": [0, 0, 0, 2, 0, 5], "slot": [16, 17, 20, 0, 0, 0]})
    tf = time_features(times)
    user = np.array([0, 0, 0, 0, 1, 1])
    city = np.zeros(6, np.int64)
    bounds = window_bounds(user, tf["day"].to_numpy(), window_days=3)
    assert bounds_list(bounds) == [(0, 4), (4, 5), (5, 6)]
    bounds = np.array([[0, 4], [4, 6]])   # force a 2-token window for user 1 (6 days apart)
    return make_windows(location, tf, city, np.array([3]), bounds)


def test_make_windows_tokens():
    w = hand_windows()
    assert len(w) == 2
    assert w.location.tolist() == [[0, 1, 3, 2], [1, 0, PAD, PAD]]     # OOV -> N = 3
    assert w.slot.tolist() == [[16, 17, 20, 0], [0, 0, 0, 0]]
    assert w.dow.tolist() == [[1, 1, 1, 3], [1, 6, 0, 0]]              # day % 7 + 1, 0 = padding
    # gaps in half-hour slots: 0 first; 30 min -> 1; 90 min -> 3; 2 days - 10 h = 76;
    # 5 days = 240 -> clamped to 95
    assert w.gap.tolist() == [[0, 1, 3, 76], [0, 95, 0, 0]]
    assert w.row.tolist() == [[0, 1, 2, 3], [4, 5, -1, -1]]
    assert w.city.tolist() == [0, 0]
    for a in (w.location, w.slot, w.dow, w.gap, w.next_location, w.next_gap, w.row, w.target_row):
        assert a.dtype == np.int64 and a.shape == (2, 4)


def test_make_windows_targets():
    w = hand_windows()
    # next location; IGNORE_INDEX for the OOV target (position 1), the last position and padding
    assert w.next_location.tolist() == [[1, IGNORE_INDEX, 2, IGNORE_INDEX], [0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    assert w.next_gap.tolist() == [[1, 3, 76, IGNORE_INDEX], [95, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    # the OOV target keeps its target row (a miss in evaluation)
    assert w.target_row.tolist() == [[1, 2, 3, -1], [5, -1, -1, -1]]


def test_make_windows_oov_id_per_city_and_gap_clamp_from_datetimes():
    location = np.array([0, -1, -1, 4])
    tf = pd.DataFrame({"minute": [0, 10, 0, 200 * 30], "day": [0, 0, 0, 4], "slot": [0, 0, 0, 8],
                       "dow": [1, 1, 1, 5]})
    city = np.array([0, 0, 1, 1])
    w = make_windows(location, tf, city, np.array([2, 5]), np.array([[0, 2], [2, 4]]))
    assert w.location.tolist() == [[0, 2], [5, 4]]         # OOV = 2 in city 0, 5 in city 1
    assert w.city.tolist() == [0, 1]
    assert w.gap.tolist() == [[0, 0], [0, N_GAPS - 1]]     # 10 min -> 0 slots; 200 slots -> 95
    assert w.next_location.tolist() == [[IGNORE_INDEX, IGNORE_INDEX], [4, IGNORE_INDEX]]
    assert w.target_row.tolist() == [[1, -1], [3, -1]]


def test_make_windows_without_windows():
    tf = pd.DataFrame({"minute": [0], "day": [0], "slot": [0], "dow": [1]})
    w = make_windows(np.array([0]), tf, np.array([0]), np.array([1]), np.zeros((0, 2), np.int64))
    assert len(w) == 0 and w.location.shape[0] == 0


def test_window_dataset_cuts_to_longest_window_of_the_batch():
    ds = WindowDataset(hand_windows())
    assert ds.lengths.tolist() == [4, 2]
    X, y = ds[np.array([1])]
    assert X["location"].tolist() == [[1, 0]]
    assert X["city"].tolist() == [0]
    assert y["next_location"].tolist() == [[0, IGNORE_INDEX]]
    X, y = ds[np.array([1, 0])]
    assert X["location"].shape == (2, 4) and X["location"].dtype == torch.int64
    assert set(X) == {"location", "slot", "dow", "gap", "city"} and set(y) == {"next_location", "next_gap"}


# --------------------------------------------------------------------------------------------------
# CityBatchSampler
# --------------------------------------------------------------------------------------------------
CITY = np.array([0, 0, 1, 0, 1, 1, 1, 0, 2, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1])
LENGTHS = np.array([5, 3, 9, 1, 4, 4, 2, 8, 7, 3, 6, 2, 5, 1, 9, 9, 3, 2, 4, 6])


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 32])
def test_city_batches_single_city_and_each_window_once(shuffle, batch_size):
    sampler = CityBatchSampler(CITY, LENGTHS, batch_size, shuffle=shuffle, random_state=0)
    # per city 6, 13, 1 windows: ceil(6/b) + ceil(13/b) + ceil(1/b) batches
    assert np.bincount(CITY).tolist() == [6, 13, 1]
    expected_len = sum(-(-n // batch_size) for n in (6, 13, 1))
    assert len(sampler) == expected_len
    for _ in range(3):  # three epochs
        batches = list(sampler)
        assert len(batches) == expected_len
        for b in batches:
            assert 1 <= len(b) <= batch_size
            assert len(np.unique(CITY[b])) == 1
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(CITY)))


def test_city_batches_without_shuffle_follow_city_then_length():
    batches = list(CityBatchSampler(CITY, LENGTHS, 3, shuffle=False))
    # city 0: windows 0,1,3,7,11,12 with lengths 5,3,1,8,2,5 -> by length (stable): 3,11,1,0,12,7
    assert [b.tolist() for b in batches[:2]] == [[3, 11, 1], [0, 12, 7]]
    # city 1 by length: 13 (1), 6 17 (2), 9 16 (3), 4 5 18 (4), 10 19 (6), 2 14 15 (9)
    assert [b.tolist() for b in batches[2:7]] == [[13, 6, 17], [9, 16, 4], [5, 18, 10], [19, 2, 14], [15]]
    assert [CITY[b[0]] for b in batches] == [0, 0, 1, 1, 1, 1, 1, 2]
    assert batches[-1].tolist() == [8]


def test_city_batches_same_seed_same_order():
    first = [b.tolist() for b in CityBatchSampler(CITY, LENGTHS, 2, shuffle=True, random_state=3)]
    again = [b.tolist() for b in CityBatchSampler(CITY, LENGTHS, 2, shuffle=True, random_state=3)]
    assert first == again
    others = {str([b.tolist() for b in CityBatchSampler(CITY, LENGTHS, 2, shuffle=True, random_state=s)])
              for s in range(10)}
    assert len(others) > 1  # seeds matter


def test_city_batch_loader_yields_single_city_batches():
    w = hand_windows()
    ds = WindowDataset(w)
    loader = CityBatchLoader(ds, batch_size=8, shuffle=True, random_state=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 1
    X, y = batches[0]
    assert X["location"].shape == (2, 4)
    assert torch.unique(X["city"]).tolist() == [0]


# --------------------------------------------------------------------------------------------------
# token_batches: scoring batches of at most max_tokens padded tokens
# --------------------------------------------------------------------------------------------------
def test_token_batches_by_hand():
    # without a cost a batch, every run of equal lengths is a batch: no padding at all
    assert token_batches(np.array([5, 3, 2, 2, 1]), 6) == [(slice(0, 1), 5), (slice(1, 2), 3), (slice(2, 4), 2),
                                                          (slice(4, 5), 1)]
    # at 2 tokens a batch, [2, 2, 1] padded to 2 (6 tokens + 2) beats [2, 2] and [1] (5 + 4);
    # [3, 2, 2] would not fit 6 tokens
    assert token_batches(np.array([5, 3, 2, 2, 1]), 6, batch_cost=2) == [(slice(0, 1), 5), (slice(1, 2), 3),
                                                                        (slice(2, 5), 2)]
    # at 4: [3] and [2, 2, 1] (3 + 6 + 8 = 17) against [3, 2] and [2, 1] (6 + 4 + 8 = 18)
    assert token_batches(np.array([3, 2, 2, 1]), 6, batch_cost=4) == [(slice(0, 1), 3), (slice(1, 4), 2)]
    # a window longer than the budget is a batch of its own; a run longer than a batch fills
    # whole batches first
    assert token_batches(np.array([9, 4, 4, 4, 4, 4]), 8, batch_cost=100) == [
        (slice(0, 1), 9), (slice(1, 3), 4), (slice(3, 5), 4), (slice(5, 6), 4)]
    assert token_batches(np.zeros(0, np.int64), 8) == []
    assert token_batches(np.array([0, 0]), 8) == [(slice(0, 2), 1)]            # lengths below 1 count as 1
    # an infinite (or huge) cost a batch: the fewest batches, then the fewest padded tokens; not
    # windows cut into blocks padded to the longest (the sums of costs overflowed)
    long_then_short = np.array([144] + [1] * 2000)
    for cost in (256, 1e300, 1e308, float("inf")):
        assert token_batches(long_then_short, 2048, batch_cost=cost) == [(slice(0, 1), 144), (slice(1, 2001), 1)]
    # NYC's 544 test windows of the throughput benchmark (1-25 visits, longest first) at the
    # estimators' settings: 4 batches of 2,440 padded tokens (the greedy fill of 2,048 tokens
    # made 3 of 4,124; the windows hold 1,827 visits)
    lengths = np.repeat(np.arange(25, 0, -1), [1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 2, 0, 5, 3, 3, 6, 9, 9, 12, 16, 23, 55,
                                                114, 209, 73])
    batches = token_batches(lengths, 2048, batch_cost=256)
    assert [(b.stop - b.start, width) for b, width in batches] == [(18, 25), (75, 10), (169, 4), (282, 2)]
    assert token_batches(lengths, 2048) == token_batches(lengths, 2048, batch_cost=0)
    assert len(token_batches(lengths, 2048)) == 19 and sum(w * (b.stop - b.start) for b, w in
                                                           token_batches(lengths, 2048)) == lengths.sum()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_token_batches_refuses_a_bad_budget(bad):
    with pytest.raises(ValueError, match="max_tokens must be an int >= 1"):
        token_batches(np.array([2, 1]), bad)


@pytest.mark.parametrize("bad", [-1, float("nan"), True, "1"])
def test_token_batches_refuses_a_bad_batch_cost(bad):
    with pytest.raises(ValueError, match="batch_cost must be a number >= 0"):
        token_batches(np.array([2, 1]), 8, batch_cost=bad)


def test_token_batches_refuses_unsorted_lengths():
    with pytest.raises(ValueError, match=r"non-increasing .* got 1 then 4 at windows 1 and 2: sort them"):
        token_batches(np.array([9, 1, 4, 1]), 8)


def _cost(batches, batch_cost):
    return sum(batch_cost + (b.stop - b.start) * width for b, width in batches)


def _partitions(runs, max_tokens):
    """Every partition of the runs (count, width) that token_batches may choose: batches of
    whole runs that fit the budget, or one run alone cut into full batches; as batch sizes."""
    if not runs:
        yield []
        return
    for j in range(1, len(runs) + 1):
        n, width = sum(c for c, _ in runs[:j]), runs[0][1]
        if j == 1:
            per = max(max_tokens // width, 1)
            head = [(min(per, n - a), width) for a in range(0, n, per)]
        elif n * width <= max_tokens:
            head = [(n, width)]
        else:
            break
        for rest in _partitions(runs[j:], max_tokens):
            yield head + rest


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 12), max_size=40), st.integers(1, 60), st.sampled_from([0, 1, 5, 32, 1000]))
def test_token_batches_cover_every_window_within_the_budget_at_the_least_cost(lengths, budget, batch_cost):
    lengths = np.sort(np.array(lengths, np.int64))[::-1]
    batches = token_batches(lengths, budget, batch_cost=batch_cost)
    # consecutive, in order, every window once
    assert [i for b, _ in batches for i in range(b.start, b.stop)] == list(range(len(lengths)))
    for b, width in batches:
        part = lengths[b]
        assert width == part.max()
        assert len(part) * width <= budget or len(part) == 1
    # the least cost over every partition of the family (brute force)
    values, counts = np.unique(lengths, return_counts=True)
    runs = [(int(c), int(v)) for v, c in zip(values[::-1], counts[::-1])]
    least = min(sum(batch_cost + n * w for n, w in p) for p in _partitions(runs, budget))
    assert _cost(batches, batch_cost) == least
