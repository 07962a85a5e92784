"""Tests of trajmoe.preprocessing (raw GPS -> stay points -> visits) and the GeoLife loader."""

from __future__ import annotations

import time
import types
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from trajmoe.datasets import load_geolife
from trajmoe.exceptions import DataWarning, SchemaError
from trajmoe.preprocessing import StayPointDetector, as_fixes, is_staypoints, staypoints_to_visits
from trajmoe.schema import validate_visits

pytest.importorskip("trackintel")
gpd = pytest.importorskip("geopandas")

TZ = "Europe/Helsinki"


def _fixes(user=1, start="2024-05-01 08:00", stays=((60.170, 24.940, 15), (60.200, 24.900, 15)),
           tz=TZ):
    """One fix a minute: ``minutes`` fixes at each (lat, lon), then the next stay."""
    rows = []
    t = pd.Timestamp(start, tz=tz)
    for lat, lon, minutes in stays:
        for _ in range(minutes):
            rows.append((user, t, lat, lon))
            t += pd.Timedelta(minutes=1)
    return pd.DataFrame(rows, columns=["user_id", "tracked_at", "lat", "lon"])


@pytest.fixture(scope="module")
def geolife():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_geolife()


# ------------------------------------------------------------------ GeoLife loader
def test_load_geolife(geolife):
    fixes = geolife.fixes
    assert list(fixes.columns) == ["user_id", "tracked_at", "lat", "lon", "elevation", "mode",
                                   "trajectory_id"]
    assert len(fixes) == 8458 and sorted(fixes["user_id"].unique()) == ["000", "001", "010", "020", "178"]
    assert str(fixes["tracked_at"].dt.tz) == "Asia/Shanghai"
    assert geolife.n_dropped == {"duplicate_files": 1, "invalid_fixes": 0}
    # transport modes from labels.txt of users 010 and 020 only
    labelled = fixes.loc[fixes["mode"].notna(), "user_id"].unique()
    assert set(labelled) <= {"010", "020"} and fixes["mode"].notna().sum() == 4132
    assert set(fixes["mode"].dropna()) <= set(geolife.labels["mode"])
    assert fixes["elevation"].isna().any()  # -777 is "no altitude"
    assert fixes.groupby("user_id")["tracked_at"].is_monotonic_increasing.all()


def test_load_geolife_users_and_utc():
    data = load_geolife(users=["178"], tz=None)
    assert set(data.fixes["user_id"]) == {"178"} and str(data.fixes["tracked_at"].dt.tz) == "UTC"
    # first fix of 20100312172608.plt: 2010-03-12 17:26:08 GMT, 492 ft
    first = data.fixes.iloc[0]
    assert first["tracked_at"] == pd.Timestamp("2010-03-12 17:26:08", tz="UTC")
    assert first["elevation"] == pytest.approx(492 * 0.3048)


def test_load_geolife_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="geolife"):
        load_geolife(data_home=tmp_path)


# ------------------------------------------------------------------ the detector
def test_two_stays_hand_made():
    fixes = _fixes()
    det = StayPointDetector(include_last=True)
    visits = det.fit_transform(fixes)
    validate_visits(visits)
    assert list(visits.columns) == ["user_id", "started_at", "finished_at", "lat", "lon", "city",
                                    "n_fixes", "staypoint_id"]
    assert len(visits) == 2 and visits["n_fixes"].tolist() == [15, 15]
    assert visits["lat"].tolist() == pytest.approx([60.17, 60.20])
    assert visits["started_at"].iloc[0] == pd.Timestamp("2024-05-01 08:00", tz=TZ)
    # the first stay lasts until the first fix outside it
    assert visits["finished_at"].iloc[0] == pd.Timestamp("2024-05-01 08:15", tz=TZ)
    assert str(visits["started_at"].dt.tz) == TZ and (visits["city"] == "city").all()
    assert det.counts_ == dict(n_fixes=30, n_invalid=0, n_duplicates=0, n_fixes_merged=30,
                               n_fixes_unassigned=0, n_staypoints=2, n_users=1,
                               n_users_without_staypoints=0)


def test_last_stay_omitted_by_default_and_counted():
    det = StayPointDetector()
    with pytest.warns(DataWarning, match=r"30 fixes of 1 users -> 1 stay points.*15 in motion"):
        visits = det.fit_transform(_fixes())
    assert len(visits) == 1 and det.n_fixes_merged_ == 15 and det.n_fixes_unassigned_ == 15


def test_thresholds_in_metres_and_minutes():
    # 16 one-minute fixes 55 m apart every 4 minutes: one stay for 100 m, none for 30 m (runs
    # of 4 minutes are shorter than 5); none either when 20 minutes are needed
    a, b = (60.1700, 24.94, 4), (60.1705, 24.94, 4)
    wobble = _fixes(stays=(a, b, a, b, (60.30, 24.5, 5)))
    with pytest.warns(DataWarning, match="5 in motion"):
        assert len(StayPointDetector().fit_transform(wobble)) == 1
    with pytest.raises(ValueError, match="no stay point found"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            StayPointDetector(dist_threshold=30).fit_transform(wobble)
    with pytest.raises(ValueError, match="time_threshold=20"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            StayPointDetector(time_threshold=20).fit_transform(wobble)


def test_gap_threshold_minutes():
    # 8 fixes at one place with a 31-minute gap after the fifth: runs of 4 and 3 minutes
    fixes = _fixes(stays=((60.17, 24.94, 8), (60.20, 24.90, 3)))
    gap = fixes.copy()
    gap.loc[5:, "tracked_at"] += pd.Timedelta(minutes=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        one = StayPointDetector(gap_threshold=60).fit_transform(gap)  # the gap is tolerated
        assert len(one) == 1 and one["n_fixes"].iloc[0] == 8
        assert one["finished_at"].iloc[0] == pd.Timestamp("2024-05-01 08:38", tz=TZ)
        with pytest.raises(ValueError, match="gap_threshold=15"):
            StayPointDetector(gap_threshold=15).fit_transform(gap)


def test_invalid_and_duplicate_fixes_are_dropped_and_counted():
    fixes = _fixes()
    bad = pd.concat([fixes, fixes.iloc[[3, 4]],
                     pd.DataFrame({"user_id": [1, None], "tracked_at": [fixes.tracked_at[0]] * 2,
                                   "lat": [np.nan, 60.1], "lon": [24.9, 24.9]}),
                     pd.DataFrame({"user_id": [1], "tracked_at": [fixes.tracked_at[1]],
                                   "lat": [95.0], "lon": [24.9]})], ignore_index=True)
    det = StayPointDetector(include_last=True)
    with pytest.warns(DataWarning, match=r"3 invalid .* and 2 duplicates"):
        visits = det.fit_transform(bad)
    assert (det.n_fixes_, det.n_invalid_, det.n_duplicates_, det.n_fixes_merged_) == (35, 3, 2, 30)
    assert len(visits) == 2


def test_users_and_cities_kept_apart():
    a = _fixes(user="ann")
    b = _fixes(user="bob", start="2024-05-01 09:00").assign(city="espoo")
    fixes = pd.concat([a.assign(city="helsinki"), b], ignore_index=True).sample(frac=1, random_state=0)
    before = fixes.copy()
    visits = StayPointDetector(include_last=True).fit_transform(fixes)
    pd.testing.assert_frame_equal(fixes, before)  # the caller's frame is not modified
    assert visits[["city", "user_id"]].drop_duplicates().values.tolist() == [
        ["espoo", "bob"], ["helsinki", "ann"]]
    assert visits["staypoint_id"].tolist() == [0, 1, 2, 3]
    assert (StayPointDetector(city="x", include_last=True).fit_transform(fixes)["city"] == "x").all()
    # one user in both cities: city= would merge the two tracks into one
    both = pd.concat([fixes, _fixes(user="ann", start="2024-06-01 09:00").assign(city="espoo")], ignore_index=True)
    with pytest.raises(ValueError, match=r"city='x' puts every fix in one city, but users \['ann'\] have fixes "
                                         r"in several cities"):
        StayPointDetector(city="x", include_last=True).fit_transform(both)
    assert set(StayPointDetector(include_last=True).fit_transform(both)["city"]) == {"espoo", "helsinki"}
    with pytest.raises(ValueError, match=r"city=' ' is empty: give the city a name"):
        StayPointDetector(city=" ", include_last=True).fit_transform(fixes)


def test_naive_times_and_tz():
    naive = _fixes(tz=None)
    out = StayPointDetector(include_last=True).fit_transform(naive)
    assert out["started_at"].dt.tz is None and out["started_at"].iloc[0] == pd.Timestamp("2024-05-01 08:00")
    local = StayPointDetector(include_last=True, tz=TZ).fit_transform(naive)
    assert local["started_at"].iloc[0] == pd.Timestamp("2024-05-01 08:00", tz=TZ)
    utc = StayPointDetector(include_last=True, tz="UTC").fit_transform(_fixes())
    assert utc["started_at"].iloc[0] == pd.Timestamp("2024-05-01 05:00", tz="UTC")


def test_bad_input_messages():
    with pytest.raises(SchemaError, match=r"lack the columns \['tracked_at'\]"):
        StayPointDetector().fit_transform(_fixes().drop(columns="tracked_at"))
    with pytest.raises(SchemaError, match="column 'tracked_at' has dtype int64, not datetime64"):
        StayPointDetector().fit_transform(_fixes().assign(tracked_at=1))
    # stay points given already: the message names their column
    stays = pd.DataFrame({"user_id": [1, 1], "started_at": [1714550400, 1714554000],
                          "finished_at": pd.to_datetime(["2024-05-01 08:30", "2024-05-01 09:50"]),
                          "lat": [60.1, 60.2], "lon": [24.9, 24.9]})
    with pytest.raises(SchemaError, match=r"column 'started_at' has dtype int64.*X\['started_at'\], unit='s'"):
        StayPointDetector().fit_transform(stays)
    # one city for stay points whose column names two: refused, as for fixes
    two = stays.assign(started_at=pd.to_datetime(["2024-05-01 08:00", "2024-05-01 09:00"]), city=["a", "b"])
    with pytest.raises(ValueError, match=r"city='z' puts every stay point in one city.*\['a', 'b'\].*city=None"):
        StayPointDetector(city="z").fit_transform(two)
    with pytest.raises(SchemaError, match="must be a DataFrame"):
        StayPointDetector().fit_transform([1, 2])
    with pytest.raises(ValueError, match="dist_threshold"):
        StayPointDetector(dist_threshold=-1).fit(_fixes())


def test_sklearn_api():
    det = StayPointDetector(dist_threshold=50, time_threshold=3)
    assert clone(det).get_params()["dist_threshold"] == 50
    assert det.__sklearn_tags__().requires_fit is False
    # stateless: transform works without fit, and fit records the counts
    assert len(StayPointDetector(include_last=True).transform(_fixes())) == 2
    assert StayPointDetector(include_last=True).fit(_fixes()).n_staypoints_ == 2


# ------------------------------------------------------------------ adapters
def test_geodataframe_of_points_and_staypoints():
    fixes = _fixes()
    gdf = gpd.GeoDataFrame(fixes[["user_id", "tracked_at"]],
                           geometry=gpd.points_from_xy(fixes.lon, fixes.lat), crs="EPSG:4326")
    projected = gdf.to_crs(3067)  # ETRS-TM35FIN metres: converted back to degrees
    out = StayPointDetector(include_last=True).fit_transform(projected)
    assert out["lat"].tolist() == pytest.approx([60.17, 60.20])

    import trackintel as ti

    pfs = ti.Positionfixes(gdf.copy())
    _, sp = pfs.generate_staypoints(include_last=True)
    assert is_staypoints(sp) and not is_staypoints(fixes)
    det = StayPointDetector(city="helsinki")
    visits = det.fit_transform(sp)  # already stay points: passed through
    assert len(visits) == 2 and det.n_fixes_ == 0 and det.n_staypoints_ == 2
    assert (visits["city"] == "helsinki").all()
    assert "id" in staypoints_to_visits(sp).columns  # trackintel's stay point ids kept


def test_movingpandas_and_skmob_duck_typing():
    fixes = _fixes()
    df = gpd.GeoDataFrame({"speed": 0.0}, index=pd.DatetimeIndex(fixes["tracked_at"], name="t"),
                          geometry=gpd.points_from_xy(fixes.lon, fixes.lat), crs="EPSG:4326")
    collection = types.SimpleNamespace(
        trajectories=[types.SimpleNamespace(df=df, obj_id="ann", id="ann_1")])
    out = as_fixes(collection)
    assert out[["user_id", "trajectory_id"]].drop_duplicates().values.tolist() == [["ann", "ann_1"]]
    assert len(StayPointDetector(include_last=True).fit_transform(collection)) == 2
    single = types.SimpleNamespace(df=df, obj_id=None, id="t1")
    assert (as_fixes(single)["user_id"] == "t1").all()

    tdf = fixes.rename(columns={"user_id": "uid", "tracked_at": "datetime", "lon": "lng"})
    assert list(as_fixes(tdf).columns[:4]) == ["user_id", "tracked_at", "lat", "lon"]
    assert len(StayPointDetector(include_last=True).fit_transform(tdf)) == 2


# ------------------------------------------------------------------ real data, pipeline
def test_geolife_pipeline_matches_trackintel_and_is_fast(geolife):
    start = time.perf_counter()
    det = StayPointDetector(city="beijing", tz="Asia/Shanghai")
    with pytest.warns(DataWarning, match=r"8,458 fixes of 5 users -> 40 stay points"):
        visits = det.fit_transform(geolife.fixes)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, elapsed  # the bar is 2 minutes on 2 cores for load + detect
    assert det.counts_ == dict(n_fixes=8458, n_invalid=0, n_duplicates=0, n_fixes_merged=1339,
                               n_fixes_unassigned=7119, n_staypoints=40, n_users=5,
                               n_users_without_staypoints=2)
    validate_visits(visits)
    # trackintel's own stay points of user 000 (its first stay: 2008-10-23 09:45:05 UTC)
    first = visits[visits["user_id"] == "000"].iloc[0]
    assert first["started_at"] == pd.Timestamp("2008-10-23 09:45:05", tz="UTC")
    assert first["n_fixes"] == 97


def test_pipeline_runs_detector_then_estimator(geolife):
    from trajmoe.estimators import PopularityBaseline

    pipe = make_pipeline(StayPointDetector(city="beijing", tz="Asia/Shanghai", include_last=True),
                         PopularityBaseline())
    fixes = geolife.fixes[geolife.fixes["user_id"].isin(["000", "001"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        pipe.fit(fixes)
        pred = pipe.predict(fixes)
    n_visits = pipe[0].n_staypoints_
    assert n_visits > 0 and len(pred) == n_visits


# ------------------------------------------------------------------------------------------------
# time zones per city, short users
# ------------------------------------------------------------------------------------------------
def test_city_time_zone_localizer_hand_checked():
    from trajmoe.preprocessing import CityTimeZoneLocalizer

    X = pd.DataFrame({"user_id": [1, 1, 2], "city": ["nyc", "nyc", "tokyo"], "x": 0, "y": 0,
                      "started_at": pd.to_datetime(["2024-01-15 12:00", "2024-07-15 12:00", "2024-01-15 12:00"],
                                                   utc=True)}, index=["a", "b", "c"])
    before = X.copy()
    step = CityTimeZoneLocalizer({"nyc": "America/New_York", "tokyo": "Asia/Tokyo"})
    out = step.fit_transform(X)
    # winter -5 h, summer (DST) -4 h, Tokyo +9 h; naive local wall-clock times
    assert out["started_at"].astype(str).tolist() == ["2024-01-15 07:00:00", "2024-07-15 08:00:00",
                                                      "2024-01-15 21:00:00"]
    assert out.index.equals(X.index) and out["started_at"].dt.tz is None
    pd.testing.assert_frame_equal(X, before)                       # the caller's frame is not modified
    naive = X.assign(started_at=X["started_at"].dt.tz_localize(None))
    assert step.transform(naive)["started_at"].equals(out["started_at"])    # naive input read as UTC
    assert CityTimeZoneLocalizer("Asia/Tokyo", naive_tz=None).fit_transform(naive)["started_at"].equals(
        naive["started_at"])                                       # naive input already local
    with pytest.raises(ValueError, match=r"no time zone for the cities \['tokyo'\]"):
        CityTimeZoneLocalizer({"nyc": "America/New_York"}).fit(X)
    with pytest.raises(ValueError, match="needs city_tz"):
        CityTimeZoneLocalizer().fit(X)
    with pytest.raises(ValueError, match=r"city_tz\['nyc'\] = 'Mars/Olympus' is not a known IANA time zone"):
        CityTimeZoneLocalizer({"nyc": "Mars/Olympus", "tokyo": "Asia/Tokyo"}).fit(X)


def test_short_user_filter_drops_in_fit_reports_counts_and_keeps_every_row_to_predict():
    from trajmoe import HistoryFrequencyBaseline
    from trajmoe.exceptions import DataWarning
    from trajmoe.preprocessing import ShortUserFilter

    X = pd.DataFrame({"user_id": [1] * 6 + [2] * 2 + [1] * 3, "city": ["a"] * 8 + ["b"] * 3,
                      "day": 0, "slot": list(range(6)) + [0, 1] + [0, 1, 2], "x": 1, "y": 1})
    step = ShortUserFilter(min_visits=3)
    with pytest.warns(DataWarning, match=r"1 of 3 users have fewer than min_visits=3 visits; their 2 of 11 visits"):
        kept = step.fit_transform(X)
    assert kept.index.tolist() == [0, 1, 2, 3, 4, 5, 8, 9, 10]     # user 1 of city b is another user
    assert step.counts_ == {"n_users": 3, "n_users_dropped": 1, "n_visits": 11, "n_visits_dropped": 2}
    assert step.transform(X) is X
    pipe = make_pipeline(ShortUserFilter(min_visits=3), HistoryFrequencyBaseline(min_stays=1))
    with pytest.warns(DataWarning, match="ShortUserFilter"):
        pipe.fit(X)
    assert pipe.predict(X).shape == (len(X),)                       # every row gets a prediction
    assert pipe.set_output(transform="pandas") is pipe
    # a pipeline that starts from GPS fixes too (StayPointDetector had no set_output of its own)
    gps = make_pipeline(StayPointDetector(city="beijing", tz="Asia/Shanghai"), HistoryFrequencyBaseline())
    assert gps.set_output(transform="pandas") is gps
    with pytest.raises(ValueError, match="'min_visits' parameter"):
        ShortUserFilter(min_visits=0).fit(X)


def test_gps_fix_times_in_two_conventions_are_refused_not_misread():
    from trajmoe.preprocessing._frames import parse_times

    # read value by value, "05/04/2024" would be May 4 and "13/04/2024" April 13
    values = pd.Series(["05/04/2024 10:00", "05/04/2024 10:05", "13/04/2024 09:00"], index=[7, 8, 9])
    with pytest.raises(SchemaError, match=r"'tracked_at'.*day first and month first, at rows \[7, 8\]"):
        parse_times(values, "tracked_at")
    # one format throughout (ISO, or offsets that differ) still parses
    assert parse_times(pd.Series(["2024-04-05 10:00", "2024-04-13 09:00"]), "tracked_at").dt.day.tolist() == [5, 13]
    aware = parse_times(pd.Series(["2024-10-26T23:00:00+03:00", "2024-10-27T05:00:00+02:00"]), "tracked_at")
    assert aware.tolist() == [pd.Timestamp("2024-10-26 20:00", tz="UTC"), pd.Timestamp("2024-10-27 03:00", tz="UTC")]


def test_stay_points_do_not_depend_on_the_order_of_fixes_at_one_instant():
    from trajmoe.preprocessing import StayPointDetector

    t = pd.date_range("2024-05-01 08:00", periods=40, freq="min", tz="Europe/Helsinki")
    fixes = pd.DataFrame({"user_id": 1, "tracked_at": t, "lat": [60.17] * 20 + [60.20] * 20, "lon": 24.94})
    twins = fixes.assign(lat=fixes.lat + 0.0012).sample(frac=0.3, random_state=1)    # same instants, 130 m off
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        first, second = (StayPointDetector(include_last=True).fit_transform(pd.concat(parts))
                         for parts in ((fixes, twins), (twins, fixes)))
    pd.testing.assert_frame_equal(first.reset_index(drop=True), second.reset_index(drop=True))
    assert first["started_at"].dt.strftime("%H:%M").tolist() == ["08:04", "08:33"]


def test_naive_times_in_a_daylight_saving_hour_are_refused_not_dropped():
    from trajmoe.preprocessing import CityTimeZoneLocalizer, StayPointDetector

    # Helsinki repeats 03:00-04:00 on 2024-10-27: naive 03:30 names two instants
    fixes = pd.DataFrame({"user_id": 1, "lat": 60.17, "lon": 24.94,
                          "tracked_at": pd.date_range("2024-10-27 02:00", periods=150, freq="min")})
    with pytest.raises(SchemaError, match=r"60 naive times in an hour that a daylight-saving change of "
                                          r"Europe/Helsinki repeats or skips, at rows \[60, 61,.*tz-aware"):
        StayPointDetector(tz="Europe/Helsinki").fit_transform(fixes)
    visits = pd.DataFrame({"user_id": 1, "city": "hel", "lat": 60.17, "lon": 24.9, "started_at": pd.to_datetime(
        ["2024-10-27 01:30", "2024-10-27 02:30", "2024-10-27 03:30", "2024-03-31 03:15"])})
    with pytest.raises(SchemaError, match=r"'started_at' has 2 naive times .* at rows \[2, 3\]"):
        CityTimeZoneLocalizer("Europe/Helsinki", naive_tz="Europe/Helsinki").fit_transform(visits)
    with pytest.raises(SchemaError, match=r"at rows \[52, 53\]"):          # the caller's labels
        CityTimeZoneLocalizer("Europe/Helsinki", naive_tz="Europe/Helsinki").fit_transform(
            visits.set_axis([50, 51, 52, 53]))
    # tz-aware times of the same instants pass
    aware = fixes.assign(tracked_at=fixes.tracked_at.dt.tz_localize("Europe/Helsinki", ambiguous=False))
    assert len(StayPointDetector(tz="Europe/Helsinki", include_last=True).fit_transform(aware)) == 1


def test_stay_points_given_with_inconsistent_times_are_refused():
    from trajmoe.preprocessing import StayPointDetector

    sp = pd.DataFrame({"user_id": [1, 1, 1], "lat": 60.17, "lon": 24.94,
                       "started_at": pd.to_datetime(["2024-05-01 08:00", "2024-05-01 10:00", "2024-05-01 12:00"]),
                       "finished_at": pd.to_datetime(["2024-05-01 09:00", "2024-05-01 09:30", "2024-05-01 13:00"])},
                      index=[10, 11, 12])
    with pytest.raises(SchemaError, match=r"1 stay point finish before it starts .* at rows \[11\]"):
        StayPointDetector().fit_transform(sp)
    mixed = sp.assign(finished_at=sp.started_at.dt.tz_localize("Europe/Helsinki") + pd.Timedelta("30min"))
    with pytest.raises(SchemaError, match=r"'started_at' is naive and their 'finished_at' tz-aware"):
        StayPointDetector().fit_transform(mixed)
    fine = sp.assign(finished_at=sp.started_at + pd.Timedelta("30min"))
    assert len(StayPointDetector().fit_transform(fine)) == 3
