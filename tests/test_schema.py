"""Tests of trajmoe.schema: validation errors name the column, the rows and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajmoe.schema import (
    CITY,
    DEFAULT_CITY,
    DataWarning,
    SchemaError,
    location_form,
    time_form,
    validate_pois,
    validate_visits,
)


def _latlon_visits():
    return pd.DataFrame(
        {
            "user_id": ["b", "a", "a", "b"],
            "started_at": pd.to_datetime(
                ["2020-01-01 10:00", "2020-01-01 12:00", "2020-01-01 09:00", "2020-01-01 08:00"]
            ).tz_localize("Europe/Paris"),
            "lat": [48.85, 48.86, 48.87, 48.88],
            "lon": [2.35, 2.36, 2.37, 2.38],
        },
        index=[10, 11, 12, 13],
    )


def _binned_visits():
    return pd.DataFrame(
        {
            "user_id": [1, 1, 2, 1],
            "day": [1, 0, 0, 0],
            "slot": [3, 7, 1, 2],
            "x": [5, 6, 7, 8],
            "y": [9, 9, 9, 9],
        },
        index=list("pqrs"),
    )


def test_error_classes():
    assert issubclass(SchemaError, ValueError)
    assert issubclass(DataWarning, UserWarning)


def test_sorts_stably_keeps_labels_and_adds_city():
    X = _latlon_visits()
    out = validate_visits(X)
    # user a: 09:00 (12), 12:00 (11); user b: 08:00 (13), 10:00 (10)
    assert out.index.tolist() == [12, 11, 13, 10]
    assert (out[CITY] == DEFAULT_CITY).all()
    assert CITY not in X.columns


def test_binned_sort_and_dtypes():
    out = validate_visits(_binned_visits())
    assert out.index.tolist() == ["s", "q", "p", "r"]
    for col in ("day", "slot", "x", "y"):
        assert out[col].dtype == np.int64


def test_sort_by_city_first_and_city_cast_to_str():
    X = _binned_visits().assign(city=[2, 1, 1, 2])
    out = validate_visits(X)
    assert out["city"].tolist() == ["1", "1", "2", "2"]
    assert out.index.tolist() == ["q", "r", "s", "p"]


def test_an_empty_city_name_is_refused_with_its_rows():
    X = _binned_visits().assign(city=["a", "", " ", "a"])
    with pytest.raises(SchemaError, match=r"column 'city' has 2 empty names at rows \['q', 'r'\]: give each"):
        validate_visits(X)


def test_never_modifies_input():
    X = _latlon_visits().assign(started_at=lambda d: d.started_at.astype(str))
    before = X.copy()
    out = validate_visits(X)
    pd.testing.assert_frame_equal(X, before)
    assert out is not X
    assert pd.api.types.is_datetime64_any_dtype(out["started_at"])


def test_mixed_forms_allowed():
    X = pd.DataFrame({"user_id": [1, 1], "day": [0, 0], "slot": [5, 4], "lat": [1.3, 1.3],
                      "lon": [103.8, 103.9]})
    assert time_form(X) == "binned" and location_form(X) == "latlon"
    assert validate_visits(X).index.tolist() == [1, 0]


def test_mixed_time_zones_object_column():
    a = pd.DataFrame({"user_id": [1], "lat": [0.0], "lon": [0.0], "city": ["ny"],
                      "started_at": pd.to_datetime(["2020-01-01"]).tz_localize("America/New_York")})
    b = a.assign(city="tokyo",
                 started_at=pd.to_datetime(["2020-01-01"]).tz_localize("Asia/Tokyo"))
    X = pd.concat([b, a], ignore_index=True)
    out = validate_visits(X)
    assert out["city"].tolist() == ["ny", "tokyo"]
    # each value keeps its own zone (local wall-clock time is what matters)
    assert out["started_at"].iloc[1].tzinfo is not None
    assert str(out["started_at"].iloc[1].tz) == "Asia/Tokyo"


@pytest.mark.parametrize("bad", [None, [1, 2], np.zeros((2, 2)), {"user_id": [1]}])
def test_not_a_dataframe(bad):
    with pytest.raises(SchemaError, match="must be a pandas DataFrame"):
        validate_visits(bad)


def test_empty():
    with pytest.raises(SchemaError, match="empty"):
        validate_visits(_binned_visits().iloc[:0])


def test_missing_user():
    with pytest.raises(SchemaError, match=r"missing required column 'user_id'.*rename"):
        validate_visits(_binned_visits().rename(columns={"user_id": "uid"}))


def test_no_time_form():
    with pytest.raises(SchemaError, match=r"no time form.*found only 'day'.*started_at"):
        validate_visits(_binned_visits().drop(columns="slot"))


def test_no_location_form():
    with pytest.raises(SchemaError, match=r"no location form.*'lat'.*'lon'"):
        validate_visits(_binned_visits().drop(columns=["x", "y"]))


def test_nan_lat_message_names_rows_and_fix():
    X = pd.DataFrame(
        {"user_id": 1, "day": 0, "slot": 0, "lat": [1.0] * 14, "lon": [2.0] * 14}
    )
    X.loc[[4, 9, 12], "lat"] = np.nan
    with pytest.raises(SchemaError) as exc:
        validate_visits(X)
    assert str(exc.value) == (
        "column 'lat' has 3 NaN values at rows [4, 9, 12]: drop or fill them before fitting or predicting"
    )


def test_more_than_five_rows_are_elided_with_count():
    X = pd.DataFrame({"user_id": 1, "day": 0, "slot": 0, "lat": np.nan, "lon": 0.0},
                     index=range(100, 108))
    with pytest.raises(SchemaError, match=r"8 NaN values at rows \[100, 101, 102, 103, 104, \.\.\.\]"):
        validate_visits(X)


def test_out_of_range_coordinates():
    X = _latlon_visits()
    X.loc[11, "lat"] = 91.0
    with pytest.raises(SchemaError, match=r"column 'lat' has 1 value outside -90\.\.90 degrees at rows \[11\]"):
        validate_visits(X)
    X = _latlon_visits()
    X.loc[[10, 13], "lon"] = [-180.5, 200.0]
    with pytest.raises(SchemaError, match=r"column 'lon' has 2 values outside -180\.\.180 degrees at rows \[10, 13\]"):
        validate_visits(X)


def test_non_numeric_coordinates():
    X = _latlon_visits().astype({"lat": object})
    X.loc[12, "lat"] = "north"
    with pytest.raises(SchemaError, match=r"column 'lat' has 1 non-numeric value at rows \[12\]"):
        validate_visits(X)


def test_unparsable_started_at():
    X = _latlon_visits().assign(started_at=["2020-01-01 10:00", "yesterday", "2020-01-02", "??"])
    with pytest.raises(SchemaError, match=r"column 'started_at' has 2 unparsable values at rows \[11, 13\]"):
        validate_visits(X)


def test_started_at_mixed_string_formats_parse():
    X = _latlon_visits().assign(started_at=["2020-01-01 10:00", "2020/01/02 11:00",
                                            "3 Jan 2020", "2020-01-04T05:06:07"])
    out = validate_visits(X)
    assert out.loc[12, "started_at"] == pd.Timestamp("2020-01-03")


def test_day_first_strings_are_refused_not_misread():
    # pandas infers month first from "08.04.2012" and fails on "13.04.2012"; read value by value
    # the first two would be August and September: refused, with the rows and the fix
    X = _latlon_visits().assign(started_at=["08.04.2012 14:20", "09.04.2012 10:00", "13.04.2012 10:00",
                                            "14.04.2012 09:00"])
    before = X.copy()
    with pytest.raises(SchemaError, match=r"day first and month first, at rows \[10, 11\].*format="):
        validate_visits(X)
    pd.testing.assert_frame_equal(X, before)
    X["started_at"] = pd.to_datetime(X["started_at"], format="%d.%m.%Y %H:%M")        # the fix
    assert validate_visits(X).loc[10, "started_at"] == pd.Timestamp("2012-04-08 14:20")


def test_unix_seconds_as_text_say_how_to_convert():
    X = _latlon_visits().assign(started_at=["1333909229", "1333909329", "1333909429", "1333909529"])
    with pytest.raises(SchemaError, match=r"4 unparsable values.*Unix times written as text.*unit='s'"):
        validate_visits(X)


def test_started_at_missing():
    X = _latlon_visits()
    X.loc[13, "started_at"] = pd.NaT
    with pytest.raises(SchemaError, match=r"column 'started_at' has 1 missing \(NaT\) value at rows \[13\]"):
        validate_visits(X)


def test_numeric_started_at_says_how_to_convert():
    X = _latlon_visits().assign(started_at=[1, 2, 3, 4])
    with pytest.raises(SchemaError, match=r"started_at.*int64.*unit='s'"):
        validate_visits(X)


def test_slot_out_of_range():
    X = _binned_visits()
    X.loc[["q", "s"], "slot"] = [48, -1]
    with pytest.raises(SchemaError, match=r"column 'slot' has 2 values outside 0\.\.47.*rows \['q', 's'\]"):
        validate_visits(X)


@pytest.mark.parametrize("col", ["day", "slot", "x", "y"])
def test_nan_binned_or_grid(col):
    X = _binned_visits().astype({col: float})
    X.loc["r", col] = np.nan
    with pytest.raises(SchemaError, match=rf"column '{col}' has 1 NaN value at rows \['r'\]"):
        validate_visits(X)


def test_non_integer_slot():
    X = _binned_visits().astype({"slot": float})
    X.loc["p", "slot"] = 2.5
    with pytest.raises(SchemaError, match=r"column 'slot' \(half-hour slot\) has 1 non-integer value at rows \['p'\]"):
        validate_visits(X)


def test_missing_user_id_values():
    X = _binned_visits().astype({"user_id": float})
    X.loc["q", "user_id"] = np.nan
    with pytest.raises(SchemaError, match=r"column 'user_id' has 1 NaN value at rows \['q'\]"):
        validate_visits(X)


def test_mixed_type_user_ids_sort():
    X = _binned_visits().assign(user_id=[1, "a", 1, "a"])
    out = validate_visits(X)
    assert sorted(out.index) == ["p", "q", "r", "s"]


# ---------------------------------------------------------------------------------- POIs
def test_validate_pois_defaults_and_no_mutation():
    P = pd.DataFrame({"x": [3, 1], "y": [2, 2], "category": ["cafe", "pub"]}, index=[7, 8])
    before = P.copy()
    out = validate_pois(P)
    pd.testing.assert_frame_equal(P, before)
    assert out["count"].tolist() == [1, 1] and out["count"].dtype == np.int64
    assert (out["city"] == "city").all()
    assert out.index.tolist() == [7, 8]


def test_validate_pois_errors():
    P = pd.DataFrame({"lat": [1.0, 2.0], "lon": [3.0, 4.0], "category": ["cafe", "Coffee Shop"]})
    msg = (
        r"column 'category' has 1 value outside the taxonomy at rows \[1\]: "
        r"'Coffee Shop' \(1\).*map_categories"
    )
    with pytest.raises(SchemaError, match=msg):
        validate_pois(P)
    with pytest.raises(SchemaError, match=r"missing required column 'category'"):
        validate_pois(P.drop(columns="category"))
    with pytest.raises(SchemaError, match=r"column 'category' has 1 NaN value at rows \[0\]"):
        validate_pois(P.assign(category=[None, "cafe"]))
    with pytest.raises(SchemaError, match=r"column 'count' has 1 negative value at rows \[1\]"):
        validate_pois(P.assign(category="cafe", count=[1, -2]))
    with pytest.raises(SchemaError, match=r"no location form"):
        validate_pois(P.drop(columns="lon"))
    with pytest.raises(SchemaError, match=r"empty"):
        validate_pois(P.iloc[:0])
    with pytest.raises(SchemaError, match=r"must be a pandas DataFrame"):
        validate_pois([1])


# ----------------------------------------------------------------------------- properties
_rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.integers(0, 3),
        st.integers(0, 47),
        st.integers(1, 5),
        st.sampled_from(["c1", "c2"]),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows_strategy, seed=st.integers(0, 2**16))
def test_property_permutation_of_rows_sorted_and_input_untouched(rows, seed):
    X = pd.DataFrame(rows, columns=["user_id", "day", "slot", "x", "city"]).assign(y=1)
    rng = np.random.default_rng(seed)
    X.index = rng.permutation(np.arange(100, 100 + len(X)))
    before = X.copy()
    out = validate_visits(X)
    pd.testing.assert_frame_equal(X, before)  # never mutates
    # same multiset of rows, each under its original label
    assert sorted(out.index) == sorted(X.index)
    pd.testing.assert_frame_equal(out.loc[X.index, X.columns], X, check_dtype=False)
    # sorted by (city, user, day, slot); rows at the same time are ordered by their content,
    # never by their input order: any permutation of X gives the same sequence of rows
    keys = list(zip(out.city, out.user_id, out.day, out.slot))
    assert keys == sorted(keys)
    again = validate_visits(X.sample(frac=1, random_state=seed))
    pd.testing.assert_frame_equal(again.reset_index(drop=True), out.reset_index(drop=True))


@given(st.lists(st.tuples(st.sampled_from(["nyc", "tokyo", "7"]),
                          st.one_of(st.integers(0, 5), st.sampled_from(["5", "x", 5.0, 7]))), max_size=40))
def test_user_codes_are_those_of_the_city_user_pairs_in_order_of_first_appearance(pairs):
    from trajmoe.schema import user_codes

    frame = pd.DataFrame(pairs, columns=["city", "user_id"], dtype=object)
    expected = pd.MultiIndex.from_arrays([frame["city"], frame["user_id"]]).factorize()[0]
    assert user_codes(frame).tolist() == expected.tolist()


def test_user_codes_hand_checked():
    """User 1 of two cities is two users; codes follow first appearance, not sorted ids."""
    from trajmoe.schema import user_codes

    frame = pd.DataFrame({"city": ["b", "a", "b", "b", "a"], "user_id": [2, 1, 2, 1, 2]})
    assert user_codes(frame).tolist() == [0, 1, 0, 2, 3]
