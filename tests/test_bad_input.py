"""Bad and awkward input, the way real users write it.

Every failure must be a clear error that names the column, the offending rows and the fix
(never a raw KeyError/AttributeError/IndexError/numpy error from deep inside); valid data is
never silently dropped; the caller's frames are never modified.
"""

from __future__ import annotations

import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from trajmoe import (
    HistoryFrequencyBaseline,
    LSTMRegressor,
    MarkovBaseline,
    PopularityBaseline,
    SpatialSemanticEncoder,
    TrajMoERegressor,
    TransformerRegressor,
)
from trajmoe.exceptions import ShortWindowsWarning, UnknownCityError
from trajmoe.metrics import OOV_RANK
from trajmoe.model_selection import train_test_users
from trajmoe.schema import DataWarning, SchemaError, user_order, validate_pois, validate_visits
from trajmoe.taxonomy import TAXONOMY

BASELINES = [PopularityBaseline, MarkovBaseline, HistoryFrequencyBaseline]


def tiny_model(**kw):
    return TrajMoERegressor(d_model=16, n_layers=1, max_epochs=1, random_state=0, **kw)


# ------------------------------------------------------------------------------- fixtures
def grid_visits(n_users=3, n=12, city=None):
    """Binned, gridded visits (YJMob100K form): n visits per user over two days."""
    rows = [
        dict(user_id=u, day=i // 6, slot=(i * 7) % 48, x=u + i % 4, y=i % 3)
        for u in range(n_users)
        for i in range(n)
    ]
    X = pd.DataFrame(rows)
    if city is not None:
        X["city"] = city
    return X


def latlon_visits(n_users=3, n=12, city=None):
    """Tz-aware, lat/lon visits in New York, one every three hours."""
    t0 = pd.Timestamp("2020-01-06 08:00", tz="America/New_York")
    rows = [
        dict(user_id=u, started_at=t0 + pd.Timedelta(hours=3 * i),
             lat=40.70 + 0.01 * (i % 4), lon=-74.00 + 0.01 * u)
        for u in range(n_users)
        for i in range(n)
    ]
    X = pd.DataFrame(rows)
    if city is not None:
        X["city"] = city
    return X


def set_at(X, col, row, value):
    X = X.copy()
    if not pd.api.types.is_object_dtype(X[col]) and isinstance(value, (str, float)):
        X[col] = X[col].astype(object if isinstance(value, str) else float)
    X.loc[row, col] = value
    return X


@pytest.fixture(scope="module")
def fitted_baseline():
    return MarkovBaseline(min_stays=2).fit(grid_visits(city="A"))


@pytest.fixture(scope="module")
def fitted_model():
    return tiny_model().fit(grid_visits(city="A"))


def all_fitters():
    return [validate_visits, lambda X: SpatialSemanticEncoder().fit(X)] + [
        lambda X, E=E: E().fit(X) for E in BASELINES] + [lambda X: tiny_model().fit(X)]


FITTER_IDS = ["validate", "encoder", "popularity", "markov", "history", "trajmoe"]


# ---------------------------------------------------------------- not a frame / empty / columns
@pytest.mark.parametrize("make", [
    lambda: grid_visits().to_numpy(),
    lambda: grid_visits().to_numpy().tolist(),
    lambda: grid_visits().to_dict("list"),
], ids=["ndarray", "list", "dict"])
@pytest.mark.parametrize("fit", all_fitters(), ids=FITTER_IDS)
def test_not_a_dataframe(fit, make):
    with pytest.raises(SchemaError, match=r"must be a pandas DataFrame.*got \w+.*pd\.DataFrame"):
        fit(make())


def test_series_is_not_a_dataframe():
    with pytest.raises(SchemaError, match=r"must be a pandas DataFrame.*got Series"):
        validate_visits(grid_visits()["x"])


@pytest.mark.parametrize("fit", all_fitters()[1:], ids=FITTER_IDS[1:])
def test_series_is_not_a_dataframe_estimators(fit):
    with pytest.raises(SchemaError, match=r"must be a pandas DataFrame.*got Series"):
        fit(grid_visits()["x"])


@pytest.mark.parametrize("fit", all_fitters(), ids=FITTER_IDS)
def test_empty_frame(fit):
    with pytest.raises(SchemaError, match=r"empty \(0 rows\)"):
        fit(grid_visits().iloc[:0])


def test_missing_user_id():
    with pytest.raises(SchemaError, match=r"missing required column 'user_id'.*rename"):
        PopularityBaseline().fit(grid_visits().drop(columns="user_id"))


def test_no_time_form():
    with pytest.raises(SchemaError, match=r"no time form.*'started_at'.*'day'.*'slot'"):
        validate_visits(grid_visits().drop(columns=["day", "slot"]))
    with pytest.raises(SchemaError, match=r"found only 'day'"):
        validate_visits(grid_visits().drop(columns=["slot"]))


def test_no_location_form():
    with pytest.raises(SchemaError, match=r"no location form.*'lat'.*'lon'.*'x'.*'y'"):
        SpatialSemanticEncoder().fit(grid_visits().drop(columns=["x", "y"]))


def test_duplicated_column_names():
    X = pd.concat([grid_visits(), grid_visits()[["x"]]], axis=1)
    with pytest.raises(SchemaError, match=r"duplicated column names \['x'\]"):
        validate_visits(X)


# ------------------------------------------------------------------------------ lat / lon
@pytest.mark.parametrize("value,what", [(np.nan, "NaN"), (95.0, "outside -90..90"),
                                        (np.inf, "outside -90..90")])
def test_bad_latitude_names_column_and_row(value, what):
    X = set_at(latlon_visits(), "lat", 5, value)
    with pytest.raises(SchemaError, match=rf"column 'lat'.*{what}.*rows \[5\].*(drop|fix)"):
        PopularityBaseline().fit(X)


def test_swapped_lat_lon_says_swapped():
    X = latlon_visits().assign(lat=103.85, lon=1.29)  # Singapore, columns swapped
    with pytest.raises(SchemaError, match=r"column 'lat'.*rows \[0, 1, 2, 3, 4, \.\.\.\].*swapped.*rename"):
        validate_visits(X)


def test_latlon_as_strings_are_converted():
    out = validate_visits(latlon_visits().astype({"lat": str, "lon": str}))
    assert out["lat"].dtype == np.float64
    X = set_at(latlon_visits(), "lon", 3, "west")
    with pytest.raises(SchemaError, match=r"column 'lon'.*non-numeric.*rows \[3\].*pd\.to_numeric"):
        validate_visits(X)


def test_points_on_two_continents_in_one_city_warn():
    ny = latlon_visits()
    far = latlon_visits().assign(lat=-34.3, lon=151.0, user_id=lambda d: d.user_id + 10)
    X = pd.concat([ny, far.iloc[:4]], ignore_index=True)  # 4 Sydney points in "New York"
    with pytest.warns(DataWarning, match=r"city 'city': 4 of 40 visits are outliers.*500 km.*rows \[36, 37, 38, 39\].*'city'"):
        enc = SpatialSemanticEncoder().fit(X)
    assert enc.n_excluded_["city"]["outlier_visits"] == 4
    # a lost minus sign on lon is caught the same way
    with pytest.warns(DataWarning, match=r"lost minus sign"):
        SpatialSemanticEncoder().fit(set_at(latlon_visits(), "lon", 2, 74.0))


def test_two_cities_far_apart_do_not_warn():
    X = pd.concat([latlon_visits(city="NYC"),
                   latlon_visits(city="SYD").assign(lat=-33.9, lon=151.2)], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        validate_visits(X)


# ------------------------------------------------------------------------------- x / y
def test_x_nan_names_row():
    with pytest.raises(SchemaError, match=r"column 'x' has 1 NaN value at rows \[4\]"):
        MarkovBaseline().fit(set_at(grid_visits(), "x", 4, np.nan))


def test_x_not_integer_hints_at_lat_lon():
    X = grid_visits().assign(x=lambda d: d.x * 1.5 + 0.25)
    with pytest.raises(SchemaError, match=r"column 'x'.*non-integer.*rows.*grid cell indices.*'lat'/'lon'"):
        validate_visits(X)


@pytest.mark.parametrize("col", ["x", "y"])
def test_huge_grid_indices_are_refused_not_corrupted(col):
    # cells are keyed in 31 bits per axis: y = 2**31 used to become a silent different cell
    X = grid_visits().assign(**{col: lambda d: d[col] + 2**31})
    with pytest.raises(SchemaError, match=rf"column '{col}'.*2\*\*30.*rows \[0, 1, 2, 3, 4, \.\.\.\]"):
        SpatialSemanticEncoder().fit(X)


def test_negative_grid_indices_are_fine():
    enc = SpatialSemanticEncoder(region_margin=None).fit(grid_visits().assign(x=lambda d: d.x - 5))
    assert enc.location_table("city")["ix"].min() == -5
    # the region widens the box by 2000 m = 4 cells of 500 m
    assert SpatialSemanticEncoder().fit(grid_visits().assign(x=lambda d: d.x - 5)).location_table("city")["ix"].min() == -9


# ------------------------------------------------------------------------------- time
def test_unparsable_started_at_names_rows():
    X = latlon_visits().assign(started_at=lambda d: d.started_at.astype(str))
    X.loc[[3, 7], "started_at"] = ["not a date", "2020-13-45"]
    with pytest.raises(SchemaError, match=r"column 'started_at' has 2 unparsable values at rows \[3, 7\]"):
        PopularityBaseline().fit(X)


def test_unix_seconds_say_how_to_convert():
    X = latlon_visits().assign(started_at=lambda d: d.started_at.astype("int64") // 10**9)
    with pytest.raises(SchemaError, match=r"'started_at'.*int64.*pd\.to_datetime\(.*unit='s'"):
        validate_visits(X)


def test_naive_and_aware_times_give_same_order():
    aware = latlon_visits().sample(frac=1, random_state=0)
    naive = aware.assign(started_at=lambda d: d.started_at.dt.tz_localize(None))
    assert validate_visits(aware).index.tolist() == validate_visits(naive).index.tolist()


def test_timestamps_of_different_zones_sorted_by_instant():
    t = pd.Timestamp("2020-01-01 10:00", tz="Asia/Tokyo")  # 01:00 UTC
    X = pd.DataFrame({"user_id": 1, "x": [1, 2], "y": 0,
                      "started_at": pd.Series([t.tz_convert("UTC") + pd.Timedelta(hours=1), t],
                                              dtype=object)})
    assert validate_visits(X).index.tolist() == [1, 0]


def test_naive_mixed_with_aware_in_one_city_is_refused():
    t = pd.Timestamp("2020-01-01 10:00")
    X = pd.DataFrame({"user_id": 1, "x": [1, 2, 3], "y": 0,
                      "started_at": pd.Series([t.tz_localize("Asia/Tokyo"), t, t], dtype=object)})
    with pytest.raises(SchemaError, match=r"'started_at' of city 'city' mixes tz-aware and naive.*rows \[1, 2\].*tz_localize"):
        validate_visits(X)
    # different cities may use different kinds
    validate_visits(X.assign(city=["tokyo", "paris", "paris"]))


def test_strings_of_mixed_zones_name_rows():
    # tz-aware strings of different offsets are instants; a naive one among them is refused
    X = pd.DataFrame({"user_id": 1, "x": [1, 2, 3], "y": 0,
                      "started_at": ["2020-01-01 10:00+09:00", "2020-01-01 05:00",
                                     "2020-01-01 05:00+01:00"]}, index=list("abc"))
    with pytest.raises(SchemaError, match=r"'started_at'.*mixes tz-aware and naive.*rows \['b'\].*tz_localize"):
        validate_visits(X)
    out = validate_visits(X.drop(index="b"))
    assert out.index.tolist() == ["a", "c"]  # 01:00 UTC before 04:00 UTC


@pytest.mark.parametrize("slot", [48, -1])
def test_slot_out_of_range(slot):
    with pytest.raises(SchemaError, match=r"column 'slot'.*outside 0\.\.47.*rows \[4\]"):
        HistoryFrequencyBaseline().fit(set_at(grid_visits(), "slot", 4, slot))


def test_float_day():
    with pytest.raises(SchemaError, match=r"column 'day'.*non-integer.*rows \[4\].*whole numbers"):
        validate_visits(set_at(grid_visits(), "day", 4, 0.5))
    out = validate_visits(grid_visits().astype({"day": float, "slot": "Int64"}))
    assert out["day"].dtype == out["slot"].dtype == np.int64


def test_boolean_slot():
    with pytest.raises(SchemaError, match=r"column 'slot' is boolean"):
        validate_visits(grid_visits().assign(slot=True))


# ------------------------------------------------------------------ both forms / mixed forms
def test_both_time_and_location_forms_started_at_and_latlon_win():
    X = pd.concat([grid_visits(), latlon_visits()[["started_at", "lat", "lon"]]], axis=1)
    enc = SpatialSemanticEncoder().fit(X)
    assert enc.cities_["city"].grid.is_projected
    assert validate_visits(X)["started_at"].notna().all()


def test_two_cities_one_latlon_one_grid():
    X = pd.concat([grid_visits(city="G"), latlon_visits(city="L")], ignore_index=True)
    X = X.sample(frac=1, random_state=0)
    pred = PopularityBaseline().fit(X).predict(X)
    assert len(pred) == len(X)
    city = pd.Series(pred).str.split(":").str[0].to_numpy()
    np.testing.assert_array_equal(city, X["city"].to_numpy())


# ---------------------------------------------------------------- index, order, users, dtypes
def test_order_and_index_labels_do_not_matter(fitted_baseline):
    X = grid_visits(city="A")
    ref = pd.Series(fitted_baseline.predict(X), index=X.index)
    shuffled = X.sample(frac=1, random_state=3)
    for frame in (shuffled, shuffled.set_axis([7] * len(X)),
                  shuffled.set_axis([f"r{i}" for i in shuffled.index]),
                  shuffled.set_axis(pd.MultiIndex.from_arrays([shuffled.index, shuffled.index]))):
        np.testing.assert_array_equal(fitted_baseline.predict(frame), ref.loc[shuffled.index].to_numpy())
    ranks = fitted_baseline.target_ranks(shuffled.set_axis([f"r{i}" for i in shuffled.index]))
    assert all(isinstance(i, str) for i in ranks.index)


def test_order_does_not_matter_for_trajmoe(fitted_model):
    X = grid_visits(city="A")
    shuffled = X.sample(frac=1, random_state=3).set_axis([0] * len(X))
    ref = pd.Series(fitted_model.predict(X), index=X.index)
    perm = X.sample(frac=1, random_state=3).index
    np.testing.assert_array_equal(fitted_model.predict(shuffled), ref.loc[perm].to_numpy())


def tied_visits():
    """Visits of 3 users where every other visit shares its time with the next one, at
    another cell: the library must order these ties the same way whatever else the frame holds."""
    X = grid_visits(n_users=3, n=12, city="A")
    tie = X.iloc[::2].assign(x=lambda d: d["x"] + 5)
    return pd.concat([X, tie], ignore_index=True)


def test_columns_the_library_does_not_read_do_not_reorder_ties():
    X = tied_visits()
    rng = np.random.default_rng(0)
    extra = X.assign(note=rng.choice(["a", "b", "c", "d"], len(X)), score=rng.normal(size=len(X)),
                     block=np.nan)   # an all-NaN column, as concatenating two cities' frames gives
    cols = list(X.columns)
    pd.testing.assert_frame_equal(validate_visits(extra)[cols], validate_visits(X))
    model = HistoryFrequencyBaseline(min_stays=2).fit(X)
    np.testing.assert_array_equal(model.predict(extra), model.predict(X))
    pd.testing.assert_series_equal(model.target_ranks(extra), model.target_ranks(X))
    assert (HistoryFrequencyBaseline(min_stays=2).fit(extra).target_ranks(X) == model.target_ranks(X)).all()


def test_ties_of_a_grid_city_ordered_alike_alone_and_beside_a_lat_lon_city():
    # a frame of two cities of two location forms: the grid city's rows have empty lat/lon and
    # float x/y; their ties still follow x/y, not an unread column, and as in the city alone
    lat_lon = pd.DataFrame({"user_id": [1, 1], "city": "nyc", "day": 0, "slot": [0, 1],
                            "lat": [40.7, 40.8], "lon": [-74.0, -73.9]})
    grid = pd.DataFrame({"user_id": 2, "city": "tokyo", "day": 0, "slot": 5, "x": range(10, 16), "y": 20})
    alone = validate_visits(grid)["x"].tolist()
    for note in ("a", "bb", "c"):
        both = pd.concat([lat_lon, grid], ignore_index=True).assign(note=lambda d: [f"{note}{i}" for i in d.index])
        out = validate_visits(both)
        assert out.loc[out["city"] == "tokyo", "x"].tolist() == alone


def test_rows_that_differ_only_in_unread_columns_are_ordered_by_them():
    # two visits of one user at one time and one cell, told apart only by a note: their order
    # (and so which row gets which prediction) follows their content, not their input order
    X = pd.concat([grid_visits(n_users=1, n=6),
                   pd.DataFrame({"user_id": 0, "day": 0, "slot": 47, "x": [7, 7], "y": 1, "note": ["b", "a"]})],
                  ignore_index=True)
    a, b = validate_visits(X), validate_visits(X.iloc[::-1])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_a_list_column_orders_twins_by_content_whatever_the_input_order():
    # visits agreeing on everything read, told apart by a column of lists (hashed as text)
    X = pd.DataFrame({"user_id": 0, "day": 0, "slot": 3, "x": 1, "y": 1, "n": [1, 2, 3],
                      "tags": [["b"], ["a", "c"], []]})
    a, b = validate_visits(X), validate_visits(X.iloc[::-1])
    assert a.index.tolist() == b.index.tolist()
    assert sorted(a.index) == [0, 1, 2]
    # a list and its text are two values, not a duplicate
    twins = pd.DataFrame({"user_id": 0, "day": 0, "slot": 3, "x": 1, "y": 1, "tags": pd.Series([[1], "[1]"], dtype=object)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert len(validate_visits(twins)) == 2


def test_user_ids_typed_as_text_order_and_split_as_integers():
    X = grid_visits(n_users=12, n=6)          # ids 0..11: "10" < "2" as text, 2 < 10 as numbers
    text = X.assign(user_id=X["user_id"].astype(str))
    a, b = validate_visits(X), validate_visits(text)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_array_equal(a["user_id"].astype(str), b["user_id"])
    for p, q in zip(train_test_users(X, random_state=1), train_test_users(text, random_state=1)):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(user_order(pd.Series([10, 2, "a", 7.0])), [2, 0, 3, 1])
    np.testing.assert_array_equal(user_order(pd.Series(["10", "2", "a", "7"])), [2, 0, 3, 1])
    # numbers as CSV readers give them as text: "7.0" (float ids), " 7" (a space after the comma)
    np.testing.assert_array_equal(user_order(pd.Series(["10.0", " 2", "a", "7.0", "1.5"])), [3, 1, 4, 2, 0])
    # distinct ids of one text never tie, so their order never follows the rows; True is 1 (one user)
    for ids in ([b"a", "b'a'", "c"], [True, 1, "True", 2]):
        col = pd.Series(ids, dtype=object)
        assert user_order(col).tolist() == user_order(col[::-1]).tolist()[::-1]
    model = tiny_model().fit(X.assign(city="A"))
    again = tiny_model().fit(text.assign(city="A"))
    pd.testing.assert_series_equal(again.target_ranks(text.assign(city="A")),
                                   model.target_ranks(X.assign(city="A")))


@pytest.mark.parametrize("E", BASELINES)
def test_single_user_and_single_visit_baselines(E):
    one = grid_visits(n_users=1, n=1)
    pred = E().fit(one).predict(one)
    assert pred.shape == (1,) and pred[0] == "city:0_0"
    assert len(E().fit(grid_visits(n_users=1)).predict(grid_visits(n_users=1))) == 12


def test_trajmoe_no_window_is_a_clear_error():
    with pytest.raises(ValueError, match=r"No training window.*min_stays=5.*window_days=3.*Lower min_stays"):
        tiny_model().fit(grid_visits(n_users=4, n=4))


def test_trajmoe_short_users_are_still_predicted():
    X = pd.concat([grid_visits(n_users=2), grid_visits(n_users=2, n=2).assign(user_id=["s", "s", "t", "t"])],
                  ignore_index=True)
    model = tiny_model().fit(X)
    pred = model.predict(X)
    assert len(pred) == len(X) and all(isinstance(p, str) for p in pred)


def test_user_ids_of_mixed_types_stay_apart():
    X = pd.DataFrame({"user_id": [1, "1"] * 6, "day": 0, "slot": range(12), "x": [0, 9] * 6, "y": 0})
    out = validate_visits(X)
    assert out["user_id"].map(type).tolist() == [int] * 6 + [str] * 6
    ranks = MarkovBaseline(min_stays=2).fit(X).target_ranks(X)
    assert len(ranks) == 10 and (ranks == 1).all()  # each user stays in its own cell


@pytest.mark.parametrize("dtype", ["category", "string"])
def test_categorical_and_string_dtypes(dtype):
    X = grid_visits(city="A").astype({"city": dtype, "user_id": dtype})
    before = X.copy(deep=True)
    model = PopularityBaseline().fit(X)
    assert len(model.predict(X)) == len(X)
    assert model.cities_ == ["A"]
    pd.testing.assert_frame_equal(X, before)


def test_extra_columns_ignored_and_kept():
    X = grid_visits().assign(note="hello", payload=lambda d: [[1, 2]] * len(d), trajectory_id=1)
    out = validate_visits(X)
    assert {"note", "payload", "trajectory_id"} <= set(out.columns)
    assert len(HistoryFrequencyBaseline().fit(X).predict(X)) == len(X)


@pytest.mark.parametrize("col,fix", [("user_id", "give them a user id"), ("city", "fill them with a city name")])
def test_missing_user_or_city(col, fix):
    X = set_at(grid_visits(city="A"), col, 3, None)
    with pytest.raises(SchemaError, match=rf"column '{col}' has 1 NaN value at rows \[3\].*{fix}"):
        PopularityBaseline().fit(X)


# ------------------------------------------------------------------------ fitted state
@pytest.mark.parametrize("method", ["predict", "predict_topk", "transform", "score", "target_ranks",
                                    "predict_time"])
def test_trajmoe_before_fit(method):
    with pytest.raises(NotFittedError):
        getattr(tiny_model(), method)(grid_visits())
    with pytest.raises(NotFittedError):
        tiny_model().location_embeddings("city")


@pytest.mark.parametrize("E", BASELINES)
def test_baselines_before_fit(E):
    for method in ("predict", "predict_topk", "score", "target_ranks"):
        with pytest.raises(NotFittedError):
            getattr(E(), method)(grid_visits())


def test_encoder_before_fit():
    enc = SpatialSemanticEncoder()
    for call in (lambda: enc.transform(grid_visits()), lambda: enc.locate(grid_visits()),
                 lambda: enc.location_table("city"), enc.get_feature_names_out):
        with pytest.raises(NotFittedError):
            call()


@pytest.mark.parametrize("which", ["baseline", "model"])
def test_predict_on_unknown_city(which, fitted_baseline, fitted_model):
    est = fitted_baseline if which == "baseline" else fitted_model
    with pytest.raises(ValueError, match=r"'city'.*not seen: \['B'\].*Known cities: \['A'\].*partial_fit"):
        est.predict(grid_visits(city="B"))
    # forgetting the city column: the error says so, and how to add it (not "column 'city' holds 'city'")
    with pytest.raises(ValueError, match=r"X has no 'city' column.*in the city 'city'.*its cities are \['A'\]\. "
                                         r"Add the 'city' column \(e\.g\. X\.assign\(city='A'\)\)"):
        est.predict(grid_visits())


def test_location_table_unknown_city(fitted_model):
    with pytest.raises(KeyError, match=r"Unknown city 'B'; known cities: \['A'\]"):
        fitted_model.encoder_.location_table("B")


# ---------------------------------------------------------------------------- cell_size
@pytest.mark.parametrize("cell_size", [0, -5, np.nan, "500"])
def test_bad_cell_size(cell_size):
    with pytest.raises(ValueError, match=r"cell_size must be a finite positive number of metres"):
        SpatialSemanticEncoder(cell_size=cell_size).fit(latlon_visits())


def test_very_large_cell_size_is_one_cell():
    enc = SpatialSemanticEncoder(cell_size=1e9, region_margin=None).fit(latlon_visits())
    assert len(enc.location_table("city")) == 1
    # a margin rounds up to whole cells: one cell on every side
    assert len(SpatialSemanticEncoder(cell_size=1e9).fit(latlon_visits()).location_table("city")) == 9


@pytest.mark.parametrize("cell_size", [np.int64(500), np.float32(500)])
def test_numpy_cell_size_accepted(cell_size):
    SpatialSemanticEncoder(cell_size=cell_size).fit(latlon_visits())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_infinite_cell_size_refused():
    with pytest.raises(ValueError, match="cell_size"):
        SpatialSemanticEncoder(cell_size=np.inf).fit(latlon_visits())


# ----------------------------------------------------------------------------------- POIs
def poi_frame():
    return pd.DataFrame({"city": "NYC", "lat": [40.70, 40.71, 40.72], "lon": [-74.0, -73.99, -73.98],
                         "category": list(TAXONOMY[:3]), "count": [1, 2, 3]})


@pytest.mark.parametrize("col,value,match", [
    ("category", "Coffee Shop", r"column 'category'.*outside the taxonomy at rows \[1\].*'Coffee Shop'.*map_categories"),
    ("category", None, r"column 'category' has 1 NaN value at rows \[1\].*unmapped"),
    ("count", -2, r"column 'count' has 1 negative value at rows \[1\].*>= 0"),
    ("count", 2.5, r"column 'count'.*non-integer.*rows \[1\]"),
    ("lat", 140.0, r"column 'lat'.*outside -90\.\.90.*rows \[1\]"),
])
def test_bad_poi_frames(col, value, match):
    P = set_at(poi_frame(), col, 1, value)
    with pytest.raises(SchemaError, match=match):
        validate_pois(P)
    with pytest.raises(SchemaError, match=match):
        SpatialSemanticEncoder().fit(latlon_visits(city="NYC"), pois=P)


def test_poi_frame_missing_category_and_not_a_frame():
    with pytest.raises(SchemaError, match=r"missing required column 'category'.*map_categories"):
        validate_pois(poi_frame().drop(columns="category"))
    with pytest.raises(SchemaError, match=r"P must be a pandas DataFrame"):
        validate_pois(poi_frame().to_numpy())


def test_pois_of_no_visited_city_are_reported():
    with pytest.warns(DataWarning, match=r"city"):
        SpatialSemanticEncoder().fit(latlon_visits(city="NYC"), pois=poi_frame().drop(columns="city"))


# --------------------------------------------------------------- the caller's frame is never modified
def test_caller_frames_never_modified():
    X = latlon_visits(city="NYC").sample(frac=1, random_state=0)
    X = X.astype({"city": "category"}).set_axis([f"v{i}" for i in range(len(X))])
    P = poi_frame()
    X0, P0 = X.copy(deep=True), P.copy(deep=True)
    validate_visits(X), validate_pois(P)
    SpatialSemanticEncoder().fit(X, pois=P).transform(X)
    for E in BASELINES:
        E().fit(X, pois=P).partial_fit(X).score(X)
    model = tiny_model().fit(X)
    model.partial_fit(X)
    model.predict(X), model.transform(X)
    pd.testing.assert_frame_equal(X, X0)
    pd.testing.assert_frame_equal(P, P0)


# ------------------------------------------------------------------------ estimators
def test_location_embeddings_unknown_city(fitted_model):
    with pytest.raises((KeyError, ValueError), match=r"known cities.*'A'"):
        fitted_model.location_embeddings("B")


def test_city_tz_given_as_string_applies_to_every_city():
    visits = latlon_visits()
    utc = visits.assign(started_at=pd.to_datetime(visits["started_at"]).dt.tz_convert("UTC"))
    one = PopularityBaseline(city_tz="America/New_York").fit(utc)
    as_dict = PopularityBaseline(city_tz={"city": "America/New_York"}).fit(utc)
    assert one._prepare(utc).times.equals(as_dict._prepare(utc).times)
    with pytest.raises(ValueError, match="city_tz must be a dict"):
        PopularityBaseline(city_tz=["America/New_York"]).fit(visits)


def test_city_tz_of_a_city_neither_in_x_nor_fitted_is_reported():
    """A misspelt city name in city_tz used to leave that city's times in UTC in silence."""
    X = grid_visits(city="A").assign(started_at=lambda d: pd.Timestamp("2021-03-01", tz="UTC")
                                     + pd.to_timedelta((d["day"] * 48 + d["slot"]) * 30, unit="min"))
    X = X.drop(columns=["day", "slot"])
    with pytest.warns(DataWarning, match=r"city_tz names cities that are neither in X nor fitted: \['a'\] "
                                         r"\(the model's cities: \['A'\]\)") as caught:
        PopularityBaseline(city_tz={"a": "Asia/Tokyo"}).fit(X)
    assert caught[0].filename == __file__                      # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        PopularityBaseline(city_tz={"A": "Asia/Tokyo"}).fit(X)


def test_city_tz_unknown_zone():
    with pytest.raises(ValueError, match=r"city_tz.*'city'.*Mars/Olympus"):
        PopularityBaseline(city_tz={"city": "Mars/Olympus"}).fit(latlon_visits()).predict(latlon_visits())


@pytest.mark.parametrize("param", ["window_days", "max_tokens"])
def test_baseline_zero_window_parameters(param):
    with pytest.raises(ValueError, match=param):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            PopularityBaseline(**{param: 0}).fit(grid_visits()).predict(grid_visits())


@pytest.mark.parametrize("k", [0, -1, "3", 1.5])
def test_predict_topk_bad_k(k, fitted_baseline):
    with pytest.raises(ValueError, match=r"\bk\b"):
        fitted_baseline.predict_topk(grid_visits(city="A"), k=k)


def test_predict_topk_beyond_the_vocabulary_gives_every_cell_once(fitted_baseline):
    """k larger than the cities' vocabularies: every cell, not k columns (k=10**9 was a MemoryError)."""
    X = grid_visits(city="A")
    n_cells = max(len(table.cells) for table in fitted_baseline.encoder_.cities_.values())
    labels, scores = fitted_baseline.predict_topk(X, k=10**9)
    assert labels.shape == scores.shape == (len(X), n_cells)
    all_cells, _ = fitted_baseline.predict_topk(X, k=n_cells)
    assert (labels == all_cells).all()
    network = tiny_model().fit(X)
    labels, scores = network.predict_topk(X, k=10**9)
    assert labels.shape == (len(X), len(network.encoder_.cities_["A"].cells)) and np.isfinite(scores).all()


@pytest.mark.parametrize("param", ["max_epochs", "batch_size", "d_model"])
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_trajmoe_zero_size_parameters(param):
    with pytest.raises(ValueError, match=param):
        tiny_model().set_params(**{param: 0}).fit(grid_visits())


def test_one_stay_windows_have_no_training_target():
    """max_tokens=1 cuts every window into single stays: nothing to train on, said before training
    (it fitted on no target and predicted with untrained weights); predict-time windows of one stay
    stay valid (a counting baseline ranks after the current stay alone)."""
    model = tiny_model().set_params(max_tokens=1)
    with pytest.raises(ValueError, match=r"No training target: every training window holds one stay \(max_tokens=1\)"):
        model.fit(grid_visits())
    assert not hasattr(model, "net_")
    assert len(MarkovBaseline(max_tokens=1).fit(grid_visits()).predict(grid_visits())) == len(grid_visits())


NEURAL = [TrajMoERegressor, LSTMRegressor, TransformerRegressor]


@pytest.mark.parametrize("E", NEURAL, ids=lambda E: E.__name__)
@pytest.mark.parametrize("param,value", [
    ("clip_grad", -1.0), ("clip_grad", 0), ("finetune_lr", float("nan")), ("finetune_lr", -1e-3),
    ("finetune_lr", "fast"), ("lr", "abc"), ("lr", -1.0), ("weight_decay", -1), ("time_weight", -1),
    ("validation_fraction", "0.1"), ("copy_path", "no"), ("copy_path", None)])
def test_neural_training_parameters_are_checked_at_fit(E, param, value):
    model = E(d_model=16, n_layers=1, max_epochs=1, random_state=0).set_params(**{param: value})
    with pytest.raises(ValueError, match=param):
        model.fit(grid_visits())


@pytest.mark.parametrize("param,value", [("top_k", 2.0), ("top_k", True), ("top_k", "2"), ("top_k", 4),
                                         ("copy_successor", "no"), ("experts", 1)])
def test_trajmoe_option_types_are_checked_at_fit(param, value):
    with pytest.raises(ValueError, match=param):
        tiny_model().set_params(**{param: value}).fit(grid_visits())


@pytest.mark.parametrize("E", [LSTMRegressor, TransformerRegressor], ids=lambda E: E.__name__)
@pytest.mark.parametrize("param", ["d_model", "n_layers"])
def test_baseline_sizes_have_no_preset_so_none_is_refused(E, param):
    with pytest.raises(ValueError, match=param):
        E(max_epochs=1).set_params(**{param: None}).fit(grid_visits())


def test_location_form_switch_names_the_city():
    model = PopularityBaseline().fit(latlon_visits(city="NYC"))
    with pytest.raises(SchemaError, match=r"'NYC'"):
        model.partial_fit(grid_visits(city="NYC"))


# ------------------------------------------------------------------------------------------
# Issue 9, "Why": each numbered case, reduced to a tiny frame (the test failed before the fix)
# ------------------------------------------------------------------------------------------
def berlin_visits(n_users=3, n=12):
    """Tz-aware lat/lon visits in Berlin (UTM zone 33), one every three hours."""
    t0 = pd.Timestamp("2021-03-22 08:00", tz="Europe/Berlin")
    return pd.DataFrame([dict(user_id=u, started_at=t0 + pd.Timedelta(hours=3 * i),
                              lat=52.50 + 0.01 * (i % 4), lon=13.40 + 0.01 * u)
                         for u in range(n_users) for i in range(n)])


@pytest.mark.parametrize("value", ["9999-12-31 00:00:00", "1970-01-01 00:00:00", "1900-01-01 12:00:00"])
def test_case01_placeholder_dates_name_column_and_rows(value):
    X = latlon_visits().assign(started_at=lambda d: d.started_at.dt.tz_localize(None).astype(str))
    X.loc[[4, 9], "started_at"] = value
    with pytest.raises(SchemaError, match=r"column 'started_at' has 2 values outside 1971-01-01\.\.2099-12-31 "
                                          r"at rows \[4, 9\].*placeholder.*Drop those rows"):
        PopularityBaseline().fit(X)


def test_case01_placeholder_dates_of_every_dtype():
    # Unix time 0 as a tz-aware value; 9999-12-31 in a second-resolution column (no nanoseconds)
    epoch = set_at(latlon_visits(), "started_at", 3, pd.Timestamp(0, tz="UTC"))
    with pytest.raises(SchemaError, match=r"'started_at' has 1 value outside.*rows \[3\].*1970-01-01"):
        validate_visits(epoch)
    far = latlon_visits().assign(started_at=lambda d: d.started_at.dt.tz_localize(None).astype("datetime64[s]"))
    far.loc[0, "started_at"] = np.datetime64("9999-12-31T00:00:00", "s")
    with pytest.raises(SchemaError, match=r"'started_at' has 1 value outside.*rows \[0\].*9999-12-31"):
        SpatialSemanticEncoder().fit(far)
    # past the year 9999 in a zone: no zone-aware Timestamp can show it, so the example is in UTC
    later = far.assign(started_at=lambda d: d.started_at.astype("datetime64[us]"))
    later.loc[0, "started_at"] = np.datetime64("12000-01-01T00:00:00", "us")
    later["started_at"] = later["started_at"].dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    with pytest.raises(SchemaError, match=r"'started_at' has 1 value outside.*rows \[0\].*12000-01-01 00:00:00 UTC"):
        validate_visits(later)


def test_case02_arrow_timestamps_with_a_time_zone_are_read():
    pa = pytest.importorskip("pyarrow")
    X = berlin_visits().sample(frac=1, random_state=1)
    arrow = X.assign(started_at=X["started_at"].astype(pd.ArrowDtype(pa.timestamp("ns", tz="Europe/Berlin"))))
    out = validate_visits(arrow)
    assert out["started_at"].dtype == "datetime64[ns, Europe/Berlin]"
    assert out.index.tolist() == validate_visits(X).index.tolist()
    model = MarkovBaseline(min_stays=2).fit(X)
    np.testing.assert_array_equal(model.predict(arrow), model.predict(X))
    naive = X.assign(started_at=X["started_at"].dt.tz_localize(None).astype(pd.ArrowDtype(pa.timestamp("s"))))
    assert validate_visits(naive)["started_at"].dtype == "datetime64[s]"


def test_case03_offsets_that_differ_by_a_dst_change_are_instants():
    from trajmoe.sequences import time_features

    X = pd.DataFrame({"user_id": 1, "x": [1, 2], "y": 0, "city": "berlin",
                      "started_at": ["2021-03-28T23:00:00+02:00", "2021-03-27T23:00:00+01:00"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # one hour apart: a DST change, no warning
        out = validate_visits(X)
        times = time_features(out)
    assert out.index.tolist() == [1, 0]  # by instant
    assert times["slot"].tolist() == [46, 46] and times["dow"].tolist() == [6, 7]  # 23:00 Sat, 23:00 Sun


def test_case04_utc_or_mixed_offsets_without_city_tz_warn():
    tokyo = latlon_visits().assign(started_at=lambda d: d.started_at.dt.tz_convert("Asia/Tokyo"))
    utc = tokyo.assign(started_at=tokyo["started_at"].dt.tz_convert("UTC"))
    fitted_utc = MarkovBaseline(min_stays=2).fit(utc)
    with pytest.warns(DataWarning, match=r"city 'city': 'started_at' is in UTC and no city_tz.*city_tz=\{'city'"):
        fitted_utc.predict(utc)
    assert not hasattr(fitted_utc, "time_zones_")        # UTC says nothing of the local time
    mixed = tokyo.astype({"started_at": object})
    mixed.loc[3, "started_at"] = utc.loc[3, "started_at"]
    with pytest.warns(DataWarning, match=r"UTC offsets more than 1 hour apart \(\+00:00 \(1\), \+09:00 \(35\).*city_tz"):
        MarkovBaseline(min_stays=2).fit(mixed).predict(mixed)
    # fitted on Tokyo times, a model reads later frames in Tokyo time (time_zones_); with city_tz
    # likewise: every form of the same instants reads the same, silently
    for model in (MarkovBaseline(min_stays=2), MarkovBaseline(min_stays=2, city_tz="Asia/Tokyo")):
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)
            ref = model.fit(tokyo).predict(tokyo)
            np.testing.assert_array_equal(model.predict(utc), ref)
            np.testing.assert_array_equal(model.predict(mixed), ref)
    assert model.time_zones_ == {"city": "Asia/Tokyo"}


def test_case05_ties_in_time_are_ordered_by_content_and_duplicates_counted():
    X = grid_visits(n_users=2, n=8)
    # user 0: three visits at the same second (day 0, slot 47), two of them exact duplicates
    tie = pd.DataFrame({"user_id": 0, "day": 0, "slot": 47, "x": [9, 8, 8], "y": 9}, index=[100, 101, 102])
    X = pd.concat([X, tie])
    swapped = X.loc[[*X.index[:-3], 102, 100, 101]]
    cols = list(X.columns)
    with pytest.warns(DataWarning, match=r"1 exact duplicate row.*kept.*drop_duplicates"):
        a, b = validate_visits(X), validate_visits(swapped)
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))
    model = HistoryFrequencyBaseline(min_stays=2)
    with pytest.warns(DataWarning, match=r"1 exact duplicate row.*dropped: each visit counts once"):
        model.fit(X)
    assert model.encoder_.n_excluded_["city"]["duplicate_visits"] == 1
    assert model.encoder_.location_table("city").set_index("label")["n_visits"]["city:8_9"] == 1
    ref = pd.Series(model.predict(X), index=X.index)
    got = pd.Series(model.predict(swapped), index=swapped.index)
    # every row keeps its prediction, also the two identical rows (ordered by their labels)
    pd.testing.assert_series_equal(got.sort_index(), ref.sort_index())
    # the target of the two is ranked at the same label (the lower), whatever the input order
    pd.testing.assert_series_equal(model.target_ranks(swapped).sort_index(), model.target_ranks(X).sort_index())
    assert 101 in model.target_ranks(swapped).index and 102 not in model.target_ranks(swapped).index


def london_visits(lons):
    lons = list(lons)
    return pd.DataFrame({"user_id": np.arange(len(lons)) % 3, "day": 0, "slot": np.arange(len(lons)) % 48,
                         "lat": 51.5, "lon": lons})


def test_case06_crs_does_not_follow_the_sample_near_a_zone_border():
    west = SpatialSemanticEncoder().fit(london_visits([-0.05] * 6 + [0.05] * 2))
    east = SpatialSemanticEncoder().fit(london_visits([-0.05] * 2 + [0.05] * 6))
    assert west.cities_["city"].grid.crs == east.cities_["city"].grid.crs == "EPSG:32631"
    points = london_visits([-0.05, 0.05])
    assert west.locate(points)["label"].tolist() == east.locate(points)["label"].tolist()
    # the stored CRS and centre are reused by partial_fit, whatever the new rows
    grid = west.cities_["city"].grid
    west.partial_fit(london_visits([-0.4] * 9))
    assert west.cities_["city"].grid == grid


def test_case07_null_island_rows_are_left_out_of_the_grid_and_counted():
    berlin = berlin_visits()
    bad = pd.concat([berlin, berlin.iloc[:3].assign(lat=0.0, lon=0.0)], ignore_index=True)
    with pytest.warns(DataWarning, match=r"city 'city': 3 of 39 visits are outliers.*3 at \(0, 0\), 'null island'"
                                         r".*rows \[36, 37, 38\]"):
        enc = SpatialSemanticEncoder().fit(bad)
    clean = SpatialSemanticEncoder().fit(berlin)
    assert enc.cities_["city"].grid.crs == clean.cities_["city"].grid.crs == "EPSG:32633"
    np.testing.assert_array_equal(enc.cities_["city"].cells, clean.cities_["city"].cells)
    assert enc.n_excluded_ == {"city": {"duplicate_visits": 0, "outlier_visits": 3, "outlier_pois": 0}}
    # a null-island visit is out of the vocabulary: never a candidate, never a prediction
    with pytest.warns(DataWarning, match="null island"):
        model = MarkovBaseline(min_stays=2).fit(bad)
    assert (model.encoder_.locate(bad)["location_id"].to_numpy()[36:] == -1).all()
    # scored, they are reported as at fit: counts, kinds and rows (before, in silence)
    with pytest.warns(DataWarning, match=r"city 'city': 3 of the 39 visits scored are outliers: 3 at \(0, 0\), "
                                         r"'null island'.*rows \[36, 37, 38\]\. They are out of the vocabulary"):
        assert set(model.predict(bad)) <= set(clean.location_table("city")["label"])
    swapped = berlin.assign(lat=berlin["lon"], lon=berlin["lat"])
    with pytest.warns(DataWarning, match=r"36 of the 36 visits scored are outliers: 36 farther than 500 km.*swapped"):
        ranks = model.target_ranks(swapped)
    assert (ranks == OOV_RANK).all()
    # without a city column the visits are in the default city, and the error says so
    with pytest.raises(UnknownCityError, match=r"X has no 'city' column.*its cities are \['berlin'\]"):
        MarkovBaseline(min_stays=2).fit(berlin.assign(city="berlin")).predict(berlin)
    # far from the bulk (a POI in Sydney): the same for POI frames
    P = pd.DataFrame({"lat": [52.51, -33.9], "lon": [13.41, 151.2], "category": list(TAXONOMY[:2])})
    with pytest.warns(DataWarning, match=r"1 of 2 POIs are outliers.*farther than 500 km.*rows \[1\]"):
        enc = SpatialSemanticEncoder().fit(berlin, pois=P)
    assert enc.n_excluded_["city"]["outlier_pois"] == 1


@pytest.mark.parametrize("lat", [89.9, -85.0])
def test_case08_latitudes_beyond_utm_name_the_rows(lat):
    from trajmoe.spatial import utm_crs_for

    with pytest.raises(SchemaError, match=r"column 'lat' has 1 value outside -80\.\.84 degrees, the latitudes UTM "
                                          r"covers, at rows \[7\].*'x'/'y'"):
        SpatialSemanticEncoder().fit(set_at(latlon_visits(), "lat", 7, lat))
    with pytest.raises(SchemaError, match=r"outside -80\.\.84 degrees, the latitudes UTM covers"):
        PopularityBaseline().fit(latlon_visits().assign(lat=lat))
    with pytest.raises(ValueError, match=r"outside the latitudes UTM covers"):
        utm_crs_for([lat], [10.0])


def test_case09_degrees_or_metres_given_as_grid_cells_warn():
    X = latlon_visits()
    rounded = X.drop(columns=["lat", "lon"]).assign(x=X["lon"].round().astype(int), y=X["lat"].round().astype(int))
    with pytest.warns(DataWarning, match=r"all 36 visits fall into 1 grid cell \(x -74\.\.-74, y 41\.\.41\).*"
                                         r"rounded degrees.*'lat'/'lon'"):
        SpatialSemanticEncoder().fit(rounded)
    # UTM metres of a 21 km walk given as x/y
    metres = rounded.assign(x=583_000 + 600 * np.arange(len(X)), y=4_507_000 + 11 * np.arange(len(X)))
    with pytest.warns(DataWarning, match=r"cells span 21,000 cells \(more than 10,000\).*metres.*// 500"):
        SpatialSemanticEncoder().fit(metres)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # small real grids pass
        SpatialSemanticEncoder().fit(grid_visits())
        SpatialSemanticEncoder().fit(metres.assign(x=lambda d: d.x // 500, y=lambda d: d.y // 500))


def test_case10_min_stays_that_leaves_users_out_is_reported():
    counts = [6] + [3] * 9  # one user with a 5-visit window, nine without
    X = pd.DataFrame({"user_id": np.repeat(np.arange(10), counts)})
    X["slot"] = X.groupby("user_id").cumcount()
    X = X.assign(day=0, x=X["slot"] % 3, y=0)
    model = PopularityBaseline().fit(X)
    with pytest.warns(DataWarning, match=r"min_stays=5: 27 of 33 visits are in no window of at least 5 visits "
                                         r"within window_days=3 days.*9 of 10 users have no such window") as caught:
        ranks = model.target_ranks(X)
    assert len(ranks) == 5
    # the counts are attributes too (the demo adds them up), and survive a pickle round trip
    note = next(w.message for w in caught if isinstance(w.message, ShortWindowsWarning))
    for warning in (note, pickle.loads(pickle.dumps(note))):
        assert isinstance(warning, ShortWindowsWarning) and str(warning) == str(note)
        assert (warning.n_left_out, warning.n_visits, warning.n_users_without, warning.n_users) == (27, 33, 9, 10)
        assert (warning.min_stays, warning.window_days, warning.kind) == (5, 3, "non-overlapping windows, as scored")
    # scoring says what it means for scoring; training, for training
    assert "left out (not scored)" in str(note)
    with pytest.warns(ShortWindowsWarning, match=r"left out \(not trained on\).*Training windows"):
        tiny_model().fit(X)


def _no_data(*args, **kwargs):
    raise AssertionError("data was loaded before every argument was checked")


def test_case15_target_without_scorable_windows_fails_before_training(monkeypatch, capsys, data_home):
    from trajmoe import cli

    loaded, real = [], cli.load_city
    monkeypatch.setattr(cli, "load_city", lambda name, data_home=None: loaded.append(name) or real(name, data_home))
    assert cli.main(["demo", "--target", "osaka", "--sources", "edinburgh,melbourne,toronto",
                     "--max-epochs", "2", "--data-home", str(data_home)]) == 2
    err = capsys.readouterr().err
    assert "target 'osaka': no window of its" in err
    assert "at least min_stays=5 visits within window_days=3 days (the longest has 4)" in err
    assert "lower --min-stays (to 4 at most)" in err
    assert loaded == ["osaka"]  # no source loaded, nothing trained


@pytest.mark.parametrize("argv,message", [
    (["--fraction", "5"], r"argument --fraction: must be in \(0, 1\], got 5"),
    (["--fraction", "0"], r"argument --fraction: must be in \(0, 1\], got 0"),
    (["--fraction", "nan"], r"argument --fraction: must be in \(0, 1\]"),
    (["--fraction", "half"], r"argument --fraction: 'half' is not a number"),
    (["--max-epochs", "0"], r"argument --max-epochs: must be >= 1, got 0"),
    (["--min-stays", "0"], r"argument --min-stays: must be >= 1, got 0"),
    (["--seed", "-1"], r"argument --seed: must be in \[0, 4294967295\], got -1"),
    (["--seed", "4294967296"], r"argument --seed: must be in \[0, 4294967295\], got 4294967296"),   # numpy's bound
    (["--sources", "nyc,paris"], r"Unknown source city \['paris'\]; choose from \["),
    (["--sources", ","], r"No source city"),
    (["--sources", "toronto,toronto"], r"listed more than once: \['toronto'\]"),
    (["--target", "osaka", "--sources", "osaka,toronto"], r"target city 'osaka' must not be a source"),
    (["--frac", "0.1"], r"unrecognized arguments: --frac 0\.1"),
    (["--data-home", "/no/such/folder"], r"data folder /no/such/folder \(from --data-home\) does not exist"),
    (["--output", "/no/such/folder/r.json"], r"--output .*folder /no/such/folder does not exist"),
])
def test_case16_cli_values_are_checked_before_any_data_is_loaded(argv, message, monkeypatch, capsys):
    from trajmoe import cli

    monkeypatch.setattr(cli, "load_city", _no_data)
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", *argv])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_case16_run_demo_checks_its_arguments_before_loading(monkeypatch):
    from trajmoe import cli

    monkeypatch.setattr(cli, "load_city", _no_data)
    for kwargs, message in [(dict(sources=("paris",)), r"Unknown source city"),
                            (dict(fraction=5), r"fraction must be .* in \(0, 1\]"),
                            (dict(max_epochs=0), r"max_epochs must be an int >= 1"),
                            (dict(sources=()), r"No source city")]:
        with pytest.raises(ValueError, match=message):
            cli.run_demo("nyc", **kwargs)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 4294967295\], got 4294967296"):
        cli.run_demo("nyc", seed=2**32)


def test_cli_default_sources_leave_out_the_target(monkeypatch):
    from trajmoe import cli

    seen = {}

    def fake_run_demo(target, sources, *args, **kwargs):
        seen["sources"] = sources
        return {"target_city": target, "protocol": "all", "rows": [
            {"model": "m", "acc@1": 0.0, "acc@5": 0.0, "mrr": 0.0, "fit_seconds": 0.0}]}

    monkeypatch.setattr(cli, "run_demo", fake_run_demo)
    assert cli.main(["demo", "--target", "singapore"]) == 0
    assert seen["sources"] == tuple(s for s in cli.DEFAULT_SOURCES if s != "singapore")
    # NYC pre-trains on the sources chosen on its validation users, as the benchmarks do
    assert cli.main(["demo", "--target", "nyc"]) == 0
    assert seen["sources"] == ("singapore",) == cli.default_sources("nyc")


@pytest.mark.parametrize("make", [lambda: SpatialSemanticEncoder(), lambda: HistoryFrequencyBaseline(min_stays=1)])
def test_errors_of_fit_and_predict_name_the_callers_row_labels_not_positions(make):
    """The estimators check a positional copy of X; their errors still name X's own labels."""
    X = pd.DataFrame({"user_id": [1] * 6, "city": "A", "x": range(6), "y": 0,
                      "day": 0, "slot": range(6)}, index=range(100, 106))
    bad = X.astype({"x": float})
    bad.loc[104, "x"] = np.nan
    with pytest.raises(SchemaError, match=r"at rows \[104\]"):
        make().fit(bad)
    fitted = make().fit(X)
    with pytest.raises(SchemaError, match=r"at rows \[104\]"):
        fitted.transform(bad) if hasattr(fitted, "transform") else fitted.predict(bad)


@pytest.mark.parametrize("make", [lambda: HistoryFrequencyBaseline(min_stays=2), lambda: tiny_model(min_stays=2)],
                         ids=["history_frequency", "trajmoe"])
def test_threads_predicting_with_one_model_get_its_predictions(make):
    """Scoring cells outside the fitted region swaps the model's tables for extended ones while
    it scores: threads that shared one model got other threads' tables (wrong top-k, no error,
    or IndexError). Calls on one model now run one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    X = grid_visits(n_users=4, n=18)
    far = X.assign(x=X["x"] + 40)                        # the same city, cells outside its region
    model = make().fit(X)
    expected = {0: model.predict_topk(X, 3)[0], 1: model.predict_topk(far, 3)[0]}
    jobs = [0, 1] * 12
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda j: model.predict_topk(far if j else X, 3)[0], jobs))
    for job, labels in zip(jobs, results):
        np.testing.assert_array_equal(labels, expected[job])
    assert "_checked_visits" not in vars(model) and model.encoder_.cities_["city"].n_unseen == 0
