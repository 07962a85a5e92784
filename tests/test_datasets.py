"""Tests of trajmoe.datasets on the real data (``$TRAJMOE_DATA``, default ../shared/data)."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trajmoe.datasets import (
    get_data_home,
    load_flickr,
    load_foursquare_nyc,
    load_foursquare_singapore,
    load_gowalla_ca,
    load_movegpt,
    load_yjmob100k,
)
from trajmoe.schema import DataWarning
from trajmoe.taxonomy import TAXONOMY

DATA = Path(
    os.environ.get("TRAJMOE_DATA")
    or Path(__file__).resolve().parent.parent.parent / "shared" / "data"
)


@pytest.fixture(scope="module")
def nyc():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # nothing is dropped or unmapped
        t0 = time.perf_counter()
        data = load_foursquare_nyc(DATA)
        data.seconds = time.perf_counter() - t0
    return data


@pytest.fixture(scope="module")
def singapore():
    with pytest.warns(DataWarning, match=r"dropped 267 exact duplicate rows of 42519"):
        return load_foursquare_singapore(DATA)


# ------------------------------------------------------------------------------ data home
def test_get_data_home_resolution(monkeypatch, tmp_path):
    assert get_data_home(tmp_path) == tmp_path
    monkeypatch.setenv("TRAJMOE_DATA", str(tmp_path / "env"))
    assert get_data_home() == tmp_path / "env"
    monkeypatch.delenv("TRAJMOE_DATA")
    assert get_data_home() == Path.home() / "trajmoe_data"
    assert get_data_home("~/x") == Path.home() / "x"


def test_missing_file_error_says_which_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        load_foursquare_nyc(tmp_path)
    msg = str(exc.value)
    assert "foursquare_nyc/checkins.csv.gz" in msg
    assert str(tmp_path) in msg
    assert "TRAJMOE_DATA" in msg and "data_home" in msg
    assert not any(tmp_path.iterdir())  # nothing written


def test_missing_file_via_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAJMOE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"environment variable TRAJMOE_DATA"):
        load_flickr("Osaka")


def test_loaders_default_to_env(monkeypatch):
    monkeypatch.setenv("TRAJMOE_DATA", str(DATA))
    assert load_yjmob100k("C").pois.shape[0] == 39064


# ----------------------------------------------------------------------------- Foursquare
def test_nyc_counts_and_columns(nyc):
    v = nyc.visits
    assert len(v) == 113_344
    assert v["user_id"].nunique() == 1_082
    assert v["venue_id"].nunique() == 4_988
    assert v["source_category"].nunique() == 205
    assert v["poi_category"].notna().all() and set(v["poi_category"]) <= set(TAXONOMY)
    assert str(v["started_at"].dt.tz) == "America/New_York"
    assert (v["city"] == "nyc").all() and nyc.city == "nyc"
    assert nyc.n_dropped == {}


def test_nyc_first_row_hand_checked(nyc):
    # first line of checkins.csv.gz: 0,3695,General Entertainment,40.7394,-73.9932,1333909229
    row = nyc.visits.loc[0]
    assert row["user_id"] == 0 and row["venue_id"] == 3695
    assert row["started_at"] == pd.Timestamp("2012-04-08 14:20:29", tz="America/New_York")
    assert row["poi_category"] == "entertainment"
    assert row["lat"] == pytest.approx(40.73939794092962)
    assert nyc.visits["started_at"].min() == pd.Timestamp("2012-04-03 14:00:09-04:00")


def test_nyc_sorted_per_user(nyc):
    v = nyc.visits
    assert v["user_id"].is_monotonic_increasing
    assert v.groupby("user_id")["started_at"].apply(lambda s: s.is_monotonic_increasing).all()


def test_nyc_pois(nyc):
    p = nyc.pois
    assert len(p) == 4_988 and p["venue_id"].is_unique
    assert set(p["category"]) <= set(TAXONOMY) and (p["count"] == 1).all()
    row = p.loc[p["venue_id"] == 3695].iloc[0]
    assert row["source_category"] == "General Entertainment" and row["category"] == "entertainment"


def test_singapore(singapore):
    v = singapore.visits
    assert len(v) == 42_519 - 267
    assert singapore.n_dropped == {"duplicate_rows": 267}
    assert v["user_id"].nunique() == 2_189 and v["venue_id"].nunique() == 4_926
    assert v["split"].value_counts().to_dict() == {"test": 31_551, "tune": 10_701}
    assert not v.duplicated(["user_id", "venue_id", "lat", "lon", "day", "time_of_day"]).any()
    assert v["slot"].between(0, 47).all() and v["day"].between(0, 377).all()
    assert singapore.pois is None and singapore.city == "singapore"
    # first line of test.txt: USER_1675 LOC_1967 "1.3095...,103.9017..." 00:48 day 0
    first = v.loc[0]
    assert (first["user_id"], first["venue_id"], first["day"], first["slot"]) == (
        "USER_1675", "LOC_1967", 0, 1)
    assert first["lat"] == pytest.approx(1.3095228064610511)
    assert first["lon"] == pytest.approx(103.90178203582764)
    assert v.loc[2, "slot"] == 37 and v.loc[2, "time_of_day"] == "18:55"  # 18 * 2 + 1


# ------------------------------------------------------------------------------- YJMob100K
def test_yjmob_city_a():
    data = load_yjmob100k("A", DATA)
    v = data.visits
    assert len(v) == 100_000 and v["user_id"].nunique() == 1_000
    assert (v.groupby("user_id").size() == 100).all()
    assert list(v.columns) == ["user_id", "day", "slot", "x", "y", "city"]
    assert v["x"].between(1, 200).all() and v["y"].between(1, 200).all()
    assert (v["city"] == "yjmob_A").all() and data.city == "yjmob_A"
    # first data line of cityA_1k_users.csv: uid 26, day 0, slot 6, cell (147, 100)
    assert tuple(v.loc[0, ["user_id", "day", "slot", "x", "y"]]) == (26, 0, 6, 147, 100)
    p = data.pois
    assert len(p) == 221_248 and p["count"].sum() == 495_171
    assert p["category"].notna().all() and set(p["category"]) <= set(TAXONOMY)
    # first POI line: 1,1,74 (Church),4
    assert p.loc[0, ["source_category", "category", "count"]].tolist() == ["Church", "religion", 4]


@pytest.mark.parametrize(("city", "rows", "total"), [("B", 56_181, 129_659), ("c", 39_064, 110_567),
                                                     ("D", 72_794, 136_756)])
def test_yjmob_other_cities_pois_only(city, rows, total):
    data = load_yjmob100k(city, DATA)
    assert data.visits is None
    assert len(data.pois) == rows and data.pois["count"].sum() == total
    assert (data.pois["city"] == f"yjmob_{city.upper()}").all()


def test_yjmob_bad_city():
    with pytest.raises(ValueError, match="unknown YJMob100K city 'E'"):
        load_yjmob100k("E", DATA)


# ---------------------------------------------------------------------------------- Flickr
@pytest.mark.parametrize(
    ("city", "dropped", "n_visits", "n_users", "n_pois", "tz"),
    [
        ("Edinburgh", 33, 7_820, 1_448, 28, "Europe/London"),
        ("Melbourne", 0, 7_246, 1_000, 88, "Australia/Melbourne"),
        ("osaka", 3, 1_369, 449, 27, "Asia/Tokyo"),
        ("Toronto", 93, 7_514, 1_384, 29, "America/Toronto"),
    ],
)
def test_flickr_counts(city, dropped, n_visits, n_users, n_pois, tz):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        data = load_flickr(city, DATA)
    msgs = [str(w.message) for w in rec if issubclass(w.category, DataWarning)]
    if dropped:
        assert any(f"dropped {dropped} of {n_visits + dropped} visits" in m for m in msgs)
    else:
        assert not msgs
    v = data.visits
    assert data.n_dropped == {"before_2000": dropped}
    assert len(v) == n_visits and v["user_id"].nunique() == n_users and len(data.pois) == n_pois
    assert str(v["started_at"].dt.tz) == tz and str(v["finished_at"].dt.tz) == tz
    assert (v["started_at"].dt.year >= 2000).all()
    assert (v["finished_at"] >= v["started_at"]).all()
    assert v["poi_category"].notna().all() and (v["city"] == city.lower()).all()


def test_flickr_row_hand_checked():
    # traj-Edin.csv line 1: 10063645@N00,1,17,1168492531,1168492558,3,1,27; poi 17 Structure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        v = load_flickr("Edinburgh", DATA).visits
    row = v.loc[0]
    assert row["user_id"] == "10063645@N00" and row["poi_id"] == 17
    assert row["started_at"] == pd.Timestamp("2007-01-11 05:15:31", tz="Europe/London")
    assert row["duration_s"] == 27 and row["n_photos"] == 3
    assert row["source_category"] == "Structure" and row["poi_category"] == "tourism"
    assert row["lat"] == pytest.approx(55.948767777436686)


def test_flickr_melbourne_lat_lon_not_swapped():
    v = load_flickr("Melbourne", DATA).visits
    assert v["lat"].between(-38.5, -37.5).all() and v["lon"].between(144.5, 145.5).all()


def test_flickr_bad_city():
    with pytest.raises(ValueError, match="unknown Flickr city 'Paris'"):
        load_flickr("Paris", DATA)


# --------------------------------------------------------------------------------- MoveGPT
@pytest.mark.parametrize(("city", "n"), [("Atlanta", 1_175), ("WashingtonDC", 1_361),
                                         ("Los Angeles", 6_198)])
def test_movegpt(city, n):
    data = load_movegpt(city, DATA)
    assert data.features.shape == (n, 71) and data.features.dtype == np.float64
    t = data.location_table
    assert t.shape == (n, 37) and list(t.columns[:34]) == list(TAXONOMY)
    assert t["rank"].between(1, 8).all()
    w = data.windows
    assert set(w["split"]) == {"train", "val", "test"}
    assert {k: len(v) for k, v in data.split.items()} == {"train": 30, "val": 30, "test": 30}
    assert w["slot"].between(0, 47).all() and w["weekday"].between(0, 6).all()
    assert w["location_id"].between(0, n - 1).all()
    assert data.n_dropped == {"out_of_vocabulary_location_ids": 0}


def test_movegpt_first_window_hand_checked():
    # Atlanta.txt line 1: "068de9... 182,4,4;13,4,6;14,4,7;..."
    w = load_movegpt("atlanta", DATA).windows
    first = w[w["window"] == 0]
    assert first["user_id"].iloc[0].startswith("068de981")
    assert first[["location_id", "weekday", "slot"]].iloc[:3].values.tolist() == [
        [182, 4, 4], [13, 4, 6], [14, 4, 7]]
    assert first["position"].tolist() == list(range(len(first)))


def test_movegpt_chicago_out_of_vocabulary_ids_reported():
    with pytest.warns(DataWarning, match=r"219 of 1938 example visits"):
        data = load_movegpt("Chicago", DATA)
    w = data.windows
    assert data.n_dropped == {"out_of_vocabulary_location_ids": 219}
    oov = w["location_id"] == -1
    assert oov.sum() == 219 and (w.loc[oov, "raw_location_id"] >= 3_597).all()


def test_movegpt_bad_city():
    with pytest.raises(ValueError, match="unknown MoveGPT city 'Boston'"):
        load_movegpt("Boston", DATA)


# ---------------------------------------------------------------------------------- Gowalla
GOWALLA_METROS = {  # city: (check-ins, users, spots), measured on gowalla_ca/checkins.csv.gz
    "gowalla_bay_area": (24_480, 948, 4_359),
    "gowalla_los_angeles": (12_417, 678, 2_107),
    "gowalla_las_vegas": (6_719, 352, 745),
    "gowalla_san_diego": (2_755, 154, 416),
    "gowalla_sacramento": (673, 48, 141),
    "gowalla_other": (1_060, 179, 199),
}
FARM = r"21 of 47373 category names are not mapped by 'gowalla'.*'Farm' \(21\)"


@pytest.fixture(scope="module")
def gowalla():
    with pytest.warns(DataWarning, match=FARM):  # the one Gowalla name left unmapped
        return load_gowalla_ca(data_home=DATA)


def test_gowalla_counts_and_columns(gowalla):
    v = gowalla.visits
    assert v.shape == (48_104, 10)
    assert list(v.columns) == ["user_id", "venue_id", "lat", "lon", "started_at", "poi_category",
                               "source_category", "source_category_code", "trajectory_id", "city"]
    assert v["user_id"].nunique() == 1_704 and v["venue_id"].nunique() == 7_967
    assert v["user_id"].dtype == np.int64 and v["venue_id"].dtype == np.int64
    assert str(v["started_at"].dt.tz) == "America/Los_Angeles"
    assert v["started_at"].min() == pd.Timestamp("2010-08-24 19:18:03", tz="UTC")
    assert v["started_at"].max() == pd.Timestamp("2010-10-22 23:25:31", tz="UTC")
    # Pacific daylight time throughout (DST ended 2010-11-07): UTC-7 for every row
    assert (v["started_at"].map(lambda t: t.utcoffset()) == pd.Timedelta(hours=-7)).all()
    assert gowalla.n_dropped == {} and gowalla.city == "gowalla_ca"
    assert gowalla.cities == tuple(GOWALLA_METROS)
    assert set(v["poi_category"].dropna()) <= set(TAXONOMY)
    assert v["poi_category"].isna().sum() == 731 + 21  # no Gowalla category; "Farm"


@pytest.mark.parametrize(("city", "counts"), GOWALLA_METROS.items())
def test_gowalla_metro_counts_hand_checked(gowalla, city, counts):
    sub = gowalla.visits[gowalla.visits["city"] == city]
    assert (len(sub), sub["user_id"].nunique(), sub["venue_id"].nunique()) == counts


def test_gowalla_metro_split_keeps_every_row_and_is_reproducible(gowalla):
    from trajmoe.datasets._gowalla import METRO_BOXES, metro_of

    v = gowalla.visits
    # every check-in kept: the cities add up to the file
    assert sum(n for n, _, _ in GOWALLA_METROS.values()) == len(v) == 48_104
    # the city IS the fixed box of the check-in's coordinates
    expected = "gowalla_" + metro_of(v["lat"], v["lon"]).astype(str)
    assert (v["city"].to_numpy(dtype=str) == expected).all()
    for metro, (lat0, lat1, lon0, lon1) in METRO_BOXES.items():
        inside = v["city"] == f"gowalla_{metro}"
        assert v.loc[inside, "lat"].between(lat0, lat1, inclusive="left").all()
        assert v.loc[inside, "lon"].between(lon0, lon1, inclusive="left").all()
    # the boxes are disjoint: each box's centre lies in that box only
    for metro, (lat0, lat1, lon0, lon1) in METRO_BOXES.items():
        assert metro_of([(lat0 + lat1) / 2], [(lon0 + lon1) / 2]).tolist() == [metro]
    # a spot lies in one city, its POI row in the same one
    assert (v.groupby("venue_id")["city"].nunique() == 1).all()
    spot_city = v.drop_duplicates("venue_id").set_index("venue_id")["city"]
    p = gowalla.pois
    assert (p["city"].to_numpy() == spot_city.reindex(p["venue_id"]).to_numpy()).all()
    # a second load gives the same frames
    with pytest.warns(DataWarning, match=FARM):
        again = load_gowalla_ca(data_home=DATA)
    pd.testing.assert_frame_equal(again.visits, v)
    pd.testing.assert_frame_equal(again.pois, p)
    assert list(gowalla.metro_boxes["city"]) == list(GOWALLA_METROS)[:-1]


def test_gowalla_categories_parsed_and_trimmed(gowalla):
    v = gowalla.visits
    names = pd.Series(v["source_category"].dropna().unique())
    assert len(names) == 288  # 289 categories, "Music" twice, "Subway" told apart
    assert names.str.strip().eq(names).all()
    for bad in ("[", "]", "{", "}", "'url'", "'name'", ";", '"', "/categories"):
        assert not names.str.contains(bad, regex=False).any(), bad
    assert not names.str.startswith("'").any() and not names.str.endswith("'").any()
    assert {"Other - Food", "Other - Parks", "Other - Nightlife", "Peet's Coffee", "McDonald's",
            "Subway", "Subway (sandwich chain)"} <= set(names)
    # one name and one category per spot; the placeholder "dummy" is a missing name
    assert (v.groupby("venue_id")["source_category_code"].nunique() == 1).all()
    dummy = v["source_category_code"] == 300
    assert dummy.sum() == 731 and v.loc[dummy, "source_category"].isna().all()
    assert v["source_category"].isna().sum() == 731
    # the Gowalla name of each code is unique
    assert (v.dropna(subset=["source_category"]).groupby("source_category_code")[
        "source_category"].nunique() == 1).all()


def test_gowalla_rows_hand_checked(gowalla):
    v = gowalla.visits  # index labels are the raw row numbers (file line - 2)
    # line 2: 2283,75441,249,[{'url': '/categories/64'; 'name': 'Other - Food '}],
    #         37.7698192624,-122.4040114592,2010-08-24 19:18:03+00:00,...,2283_12
    row = v.loc[0]
    assert (row["user_id"], row["venue_id"], row["source_category_code"]) == (2283, 75441, 249)
    assert row["source_category"] == "Other - Food" and row["poi_category"] == "restaurant"
    assert row["lat"] == pytest.approx(37.7698192624)
    assert row["lon"] == pytest.approx(-122.4040114592)
    assert row["started_at"] == pd.Timestamp("2010-08-24 12:18:03", tz="America/Los_Angeles")
    assert row["started_at"] == pd.Timestamp("2010-08-24 19:18:03", tz="UTC")
    assert row["trajectory_id"] == "2283_12" and row["city"] == "gowalla_bay_area"
    # line 22: a name with an apostrophe, double-quoted in the raw literal
    row = v.loc[20]
    assert (row["user_id"], row["source_category"], row["poi_category"]) == (
        71752, "Peet's Coffee", "cafe")
    assert row["started_at"] == pd.Timestamp("2010-08-24 12:39:17-07:00")
    # line 715: Gowalla category 454 "Subway" is the sandwich chain (164 is the transit one)
    row = v.loc[713]
    assert (row["venue_id"], row["source_category"], row["poi_category"]) == (
        261875, "Subway (sandwich chain)", "fast_food")
    # line 110: 84943,966839,300,dummy,... (no Gowalla category)
    row = v.loc[108]
    assert row["venue_id"] == 966839 and pd.isna(row["source_category"])
    assert pd.isna(row["poi_category"])
    # line 1033: 1146,637254,215,...'Subway'...,36.1273937072,-115.1693773792,
    #            2010-08-25 23:27:02+00:00: Las Vegas, Pacific time as well
    row = v.loc[1031]
    assert (row["user_id"], row["venue_id"], row["city"]) == (1146, 637254, "gowalla_las_vegas")
    assert row["started_at"] == pd.Timestamp("2010-08-25 16:27:02-07:00")


def test_gowalla_sorted_per_city_and_user(gowalla):
    v = gowalla.visits
    for _, sub in v.groupby("city"):
        assert sub["user_id"].is_monotonic_increasing
    assert v.groupby(["city", "user_id"])["started_at"].apply(
        lambda s: s.is_monotonic_increasing).all()


def test_gowalla_pois(gowalla):
    p = gowalla.pois
    assert p.shape == (7_806, 7) and p["venue_id"].is_unique
    assert set(p["category"]) <= set(TAXONOMY) and (p["count"] == 1).all()
    # spots without a (mapped) category are in the visits only: 158 "dummy", 3 "Farm"
    assert 7_967 - len(p) == 158 + 3
    row = p.loc[p["venue_id"] == 75441].iloc[0]
    assert (row["source_category"], row["category"], row["city"]) == (
        "Other - Food", "restaurant", "gowalla_bay_area")
    # the coordinates of a spot are the median of its check-ins'
    v = gowalla.visits
    med = v.groupby("venue_id")[["lat", "lon"]].median()
    assert np.allclose(med.reindex(p["venue_id"]).to_numpy(), p[["lat", "lon"]].to_numpy())


def test_gowalla_one_metro_a_real_slice():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # no "Farm" spot in San Diego
        sd = load_gowalla_ca("san_diego", DATA)
    assert sd.city == "gowalla_san_diego" and sd.cities == ("gowalla_san_diego",)
    assert sd.visits.shape == (2_755, 10) and (sd.visits["city"] == "gowalla_san_diego").all()
    assert (sd.pois["city"] == "gowalla_san_diego").all()
    assert sd.visits["lat"].between(32.5, 33.4).all()
    # the prefix and the case do not matter
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        again = load_gowalla_ca("Gowalla_San_Diego", DATA)
    pd.testing.assert_frame_equal(again.visits, sd.visits)
    # a slice of 20 users fits and predicts with a baseline end to end
    from trajmoe import HistoryFrequencyBaseline

    users = np.sort(sd.visits["user_id"].unique())[:20]
    part = sd.visits[sd.visits["user_id"].isin(users)]
    model = HistoryFrequencyBaseline().fit(part, pois=sd.pois)
    assert len(model.predict(part)) == len(part)


def test_gowalla_other_and_the_state_as_one_city():
    with pytest.warns(DataWarning, match=r"'Farm' \(3\)"):  # Coalinga
        other = load_gowalla_ca("other", DATA)
    assert other.city == "gowalla_other" and len(other.visits) == 1_060
    with pytest.warns(DataWarning, match=FARM):
        state = load_gowalla_ca(data_home=DATA, split_metros=False)
    assert state.cities == ("gowalla_ca",) and state.city == "gowalla_ca"
    assert len(state.visits) == 48_104 and (state.visits["city"] == "gowalla_ca").all()
    assert (state.pois["city"] == "gowalla_ca").all() and len(state.pois) == 7_806


def test_gowalla_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown Gowalla metro 'fresno'.*los_angeles"):
        load_gowalla_ca("fresno", DATA)
    with pytest.raises(ValueError, match="split_metros=False"):
        load_gowalla_ca("los_angeles", DATA, split_metros=False)


def test_gowalla_metros_are_cli_cities():
    from trajmoe import cli

    names = [f"gowalla_{m}" for m in ("bay_area", "los_angeles", "las_vegas", "san_diego",
                                      "sacramento")]
    assert set(names) <= set(cli.CITY_LOADERS)
    visits, pois = cli.load_city("gowalla_los_angeles", data_home=DATA)
    assert len(visits) == 12_417 and (visits["city"] == "gowalla_los_angeles").all()
    assert (pois["city"] == "gowalla_los_angeles").all() and len(pois) == 2_034


def test_a_truncated_or_damaged_data_file_is_named_and_asks_for_a_new_download(data_home, tmp_path):
    """A cut download failed deep in gzip (EOFError) or pandas (an empty or garbled table)."""
    import shutil

    nyc = tmp_path / "foursquare_nyc"
    nyc.mkdir()
    raw = (data_home / "foursquare_nyc" / "checkins.csv.gz").read_bytes()
    (nyc / "checkins.csv.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"checkins\.csv\.gz \(Foursquare check-ins\), [\d,]+ bytes, cannot be read.*"
                                         r"truncated or damaged.*EOFError.*Download it again"):
        load_foursquare_nyc(data_home=tmp_path)
    flickr = tmp_path / "flickr_tours"
    shutil.copytree(data_home / "flickr_tours", flickr)
    (flickr / "poi-Edin.csv").write_text("")
    with pytest.raises(ValueError, match=r"poi-Edin\.csv \(Flickr POIs\), 0 bytes.*EmptyDataError"):
        load_flickr("edinburgh", data_home=tmp_path)
