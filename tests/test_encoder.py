"""Tests of trajmoe.encoder: grid cells, labels, POI counts, popularity bins, z-scored coordinates,
row order, out-of-vocabulary cells, partial_fit, and the scikit-learn transformer API.

Every expected value below is computed by hand from the tiny frames of this file.
"""

from __future__ import annotations

import pickle

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod, Transformer
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from trajmoe import DataWarning, SchemaError, SpatialSemanticEncoder
from trajmoe.encoder import POPULARITY_EDGES, cell_labels, popularity_bins
from trajmoe.taxonomy import TAXONOMY

POI = {name: i for i, name in enumerate(TAXONOMY)}  # column of each category
N_POI = len(TAXONOMY)


# --------------------------------------------------------------------------------------------------
# popularity_bins
# --------------------------------------------------------------------------------------------------
def test_popularity_bins_100_distinct_counts_have_the_paper_bin_sizes():
    # 100 cells, the cell of rank r (0 = most visited) has r cells above it: share r / 100.
    # <1 % -> 1 cell, 1-5 % -> 4, 5-10 % -> 5, 10-20 % -> 10, then 20 each.
    counts = np.random.default_rng(0).permutation(np.arange(1, 101))
    bins = popularity_bins(counts)
    assert bins.dtype == np.int64
    assert np.bincount(bins, minlength=9)[1:].tolist() == [1, 4, 5, 10, 20, 20, 20, 20]
    # the most visited cell (count 100) is bin 1, the least visited (count 1) bin 8
    assert bins[counts == 100][0] == 1
    assert bins[counts == 1][0] == 8
    # count 95 has 5 cells above (share .05) -> bin 3; count 96 has 4 above (.04) -> bin 2
    assert bins[counts == 95][0] == 3 and bins[counts == 96][0] == 2


def test_popularity_bins_ties_share_a_bin():
    # [9, 5, 5, 5, 0, 0]: shares 0, 1/6, 1/6, 1/6, 4/6, 4/6 -> bins 1, 4, 4, 4, 7, 7
    assert popularity_bins([9, 5, 5, 5, 0, 0]).tolist() == [1, 4, 4, 4, 7, 7]
    # all equal: nobody above -> all bin 1
    assert popularity_bins([3, 3, 3]).tolist() == [1, 1, 1]
    assert popularity_bins([]).tolist() == []


def test_popularity_bins_among_visited_cells_are_the_papers():
    # [9, 5, 5, 5, 0, 0]: shares among the 4 visited cells 0, 1/4, 1/4, 1/4 -> bins 1, 5, 5, 5;
    # never-visited cells join the last bin
    assert popularity_bins([9, 5, 5, 5, 0, 0], among="visited").tolist() == [1, 5, 5, 5, 8, 8]
    assert popularity_bins([0, 0], among="visited").tolist() == [8, 8]
    assert popularity_bins([], among="visited").tolist() == []
    with pytest.raises(ValueError, match="among"):
        popularity_bins([1], among="all")
    # an array is not a choice: the parameter's own message, not numpy's "truth value ... ambiguous"
    with pytest.raises(ValueError, match=r"among must be one of \('vocabulary', 'visited'\)"):
        popularity_bins([1], among=np.array(["visited", "vocabulary"]))
    assert popularity_bins([3, 0], among=np.str_("visited")).tolist() == [1, 8]


@pytest.mark.parametrize("counts, match", [
    ([3, -1, 0], r"1 are not, at positions \[1\] \(values \[-1\]\)"),
    ([np.nan, 1.0], r"at positions \[0\]"),
    ([[3, 0], [1, 1]], r"1-D array of counts, got shape \(2, 2\)"),
    (["3", "1"], "dtype <U1"),
])
def test_popularity_bins_refuse_what_is_not_counts(counts, match):
    for among in ("vocabulary", "visited"):
        with pytest.raises(ValueError, match=match):
            popularity_bins(counts, among=among)


@pytest.mark.parametrize("edges", [(0.5, 0.1), (0.1, 0.1), (0.0, 0.5), (0.5, 1.0), ()])
def test_popularity_bins_refuse_edges_that_are_not_increasing_shares(edges):
    with pytest.raises(ValueError, match=r"edges must be strictly increasing shares in \(0, 1\)"):
        popularity_bins([3, 1, 0], edges=edges)


def test_popularity_bins_among_visited_ignore_how_many_cells_were_never_visited():
    # an open vocabulary adds never-visited cells: ranked among the visited cells, the visited
    # keep their bins; ranked among the vocabulary, they all move to bin 1
    counts = np.arange(1, 101)
    padded = np.concatenate([counts, np.zeros(50_000, np.int64)])
    assert popularity_bins(padded, among="visited")[:100].tolist() == popularity_bins(counts).tolist()
    assert np.all(popularity_bins(padded, among="visited")[100:] == 8)
    assert np.all(popularity_bins(padded)[:100] == 1)


def test_encoder_popularity_rank_visited_reaches_table_transform_and_unseen_cells():
    X = pd.DataFrame({"user_id": 1, "day": 0, "slot": [1, 2, 3, 4], "x": [3, 3, 4, 5], "y": 7})
    enc = SpatialSemanticEncoder(popularity_rank="visited").fit(X)
    table = enc.cities_["city"]
    # visits [2, 1, 1] in cells (3,7) (4,7) (5,7): shares 0, 1/3, 1/3 -> 1, 5, 5; the rest of the
    # region (margin 2000 m) never visited -> 8
    by_cell = dict(zip(map(tuple, table.cells), table.popularity))
    assert [by_cell[(3, 7)], by_cell[(4, 7)], by_cell[(5, 7)], by_cell[(0, 4)]] == [1, 5, 5, 8]
    # a cell first met in a frame being transformed is never visited: 8; the others keep theirs
    out = enc.transform(pd.DataFrame({"user_id": 2, "day": 0, "slot": [1, 2], "x": [40, 3], "y": [7, 7]}))
    assert out[:, -1].tolist() == [8, 1]
    # the default ranks among the whole region of 11 x 9 = 99 cells: shares 0, 1/99, 1/99 and, never
    # visited, 3/99 -> 1, 2, 2, 2: two of the visited cells share a bin with the never-visited ones
    default = SpatialSemanticEncoder().fit(X).cities_["city"]
    by_cell = dict(zip(map(tuple, default.cells), default.popularity))
    assert default.n_locations == 99
    assert [by_cell[(3, 7)], by_cell[(4, 7)], by_cell[(5, 7)], by_cell[(0, 4)]] == [1, 2, 2, 2]
    with pytest.raises(ValueError, match="popularity_rank"):
        SpatialSemanticEncoder(popularity_rank="all").fit(X)
    # partial_fit checks it too, and refuses to rank the fitted cities two ways
    with pytest.raises(ValueError, match="popularity_rank"):
        clone(enc).set_params(popularity_rank="all").partial_fit(X)
    before = table.popularity.copy()
    with pytest.raises(ValueError, match=r"popularity_rank='vocabulary', but the fitted cities rank popularity \['visited'\]"):
        enc.set_params(popularity_rank="vocabulary").partial_fit(X.assign(city="other"))
    assert list(enc.cities_) == ["city"] and np.array_equal(enc.cities_["city"].popularity, before)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=300))
def test_popularity_bins_properties(counts):
    counts = np.array(counts)
    bins = popularity_bins(counts)
    assert bins.min() >= 1 and bins.max() <= len(POPULARITY_EDGES) + 1
    # more visits never means a worse (larger) bin; equal counts, equal bins
    order = np.argsort(-counts, kind="stable")
    assert np.all(np.diff(bins[order]) >= 0)
    for c in np.unique(counts):
        assert len(np.unique(bins[counts == c])) == 1
    # the most visited cells are bin 1
    assert np.all(bins[counts == counts.max()] == 1)
    # among the visited: their bins as if the never-visited were not there, the others last
    visited = popularity_bins(counts, among="visited")
    if (counts > 0).any():
        assert np.array_equal(visited[counts > 0], popularity_bins(counts[counts > 0]))
    assert np.all(visited[counts == 0] == len(POPULARITY_EDGES) + 1)
    assert np.all(np.diff(visited[order]) >= 0)


# --------------------------------------------------------------------------------------------------
# a hand-made x/y city
# --------------------------------------------------------------------------------------------------
def grid_frame():
    """Visits on a given x/y grid (one city, default name): cells (3,7) x2, (4,7), (5,1)."""
    return pd.DataFrame({
        "user_id": [1, 1, 1, 2],
        "day": [0, 0, 0, 0],
        "slot": [16, 18, 20, 10],
        "x": [3, 4, 3, 5],
        "y": [7, 7, 7, 1],
    })


def test_grid_cells_labels_and_visit_counts():
    enc = SpatialSemanticEncoder(region_margin=None).fit(grid_frame())
    table = enc.location_table("city")
    # ids follow sorted (ix, iy): (3,7)=0, (4,7)=1, (5,1)=2
    assert table["label"].tolist() == ["city:3_7", "city:4_7", "city:5_1"]
    assert table["location_id"].tolist() == [0, 1, 2]
    assert table["ix"].tolist() == [3, 4, 5] and table["iy"].tolist() == [7, 7, 1]
    assert table["n_visits"].tolist() == [2, 1, 1]
    # popularity: shares 0, 1/3, 1/3 -> bins 1, 5, 5
    assert table["popularity"].tolist() == [1, 5, 5]
    # x/y city: no published coordinates
    assert table["lat"].isna().all() and table["lon"].isna().all()
    # no POI information at all: zero counts
    assert (table[[f"poi_{c}" for c in TAXONOMY]].to_numpy() == 0).all()
    assert table.shape == (3, 44)


def test_z_scored_coordinates_by_hand():
    enc = SpatialSemanticEncoder(region_margin=None).fit(grid_frame())
    table = enc.location_table("city")
    # centroids = index * 500 m: x 1500, 2000, 2500 (mean 2000, std 408.248),
    # y 3500, 3500, 500 (mean 2500, std 1414.214)
    np.testing.assert_allclose(table["x_z"], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    np.testing.assert_allclose(table["y_z"], [0.7071068, 0.7071068, -1.4142136], rtol=1e-6)
    # mean 0, std 1 over the vocabulary
    np.testing.assert_allclose(table[["x_z", "y_z"]].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(table[["x_z", "y_z"]].std(ddof=0), 1.0, rtol=1e-6)


def test_transform_values_by_hand():
    X = grid_frame()
    enc = SpatialSemanticEncoder(region_margin=None).fit(X)
    out = enc.transform(X)
    assert out.shape == (4, N_POI + 3)
    np.testing.assert_allclose(out[:, N_POI], [-1.2247449, 0.0, -1.2247449, 1.2247449], rtol=1e-6)
    np.testing.assert_allclose(out[:, N_POI + 1], [0.7071068, 0.7071068, 0.7071068, -1.4142136], rtol=1e-6)
    assert out[:, -1].tolist() == [1, 5, 1, 5]
    names = enc.get_feature_names_out()
    assert len(names) == N_POI + 3
    assert names[0] == "poi_finance" and names[N_POI - 1] == "poi_kindergarten"
    assert names[-3:].tolist() == ["x_z", "y_z", "popularity"]


def test_poi_frame_counts_per_cell():
    X = grid_frame()
    pois = pd.DataFrame({
        "city": ["city", "city", "city", "city", "other"],
        "x": [3, 3, 9, 3, 3],
        "y": [7, 7, 9, 7, 7],
        "category": ["cafe", "finance", "shop", "cafe", "cafe"],
        "count": [2, 1, 4, 3, 100],
    })
    with pytest.warns(DataWarning, match=r"not used: \{'other': 1\}"):
        enc = SpatialSemanticEncoder(region_margin=None).fit(X, pois=pois)
    table = enc.location_table("city").set_index("label")
    # (9,9) holds POIs but no visit: it joins the vocabulary; ids (3,7) (4,7) (5,1) (9,9)
    assert table.index.tolist() == ["city:3_7", "city:4_7", "city:5_1", "city:9_9"]
    assert table.loc["city:3_7", "poi_cafe"] == 5      # 2 + 3 (the other city's 100 not counted)
    assert table.loc["city:3_7", "poi_finance"] == 1
    assert table.loc["city:9_9", "poi_shop"] == 4
    assert table.loc["city:9_9", "n_visits"] == 0
    assert table.loc["city:4_7", [f"poi_{c}" for c in TAXONOMY]].sum() == 0
    # popularity [2, 1, 1, 0] -> shares 0, 1/4, 1/4, 3/4 -> bins 1, 5, 5, 7
    assert table["popularity"].tolist() == [1, 5, 5, 7]
    # transform reads the counts of each visit's cell
    out = enc.transform(X)
    assert out[0, POI["cafe"]] == 5 and out[0, POI["finance"]] == 1
    assert out[1, :N_POI].sum() == 0


def test_poi_frame_category_outside_taxonomy_is_an_error():
    pois = pd.DataFrame({"x": [3, 3], "y": [7, 7], "category": ["cafe", "not_a_category"]})
    with pytest.raises(SchemaError, match="not_a_category"):
        SpatialSemanticEncoder(region_margin=None).fit(grid_frame(), pois=pois)


def test_visited_category_outside_taxonomy_warns_and_is_not_counted():
    X = grid_frame().assign(poi_category=["cafe", "not_a_category", "cafe", None])
    with pytest.warns(DataWarning, match="not_a_category"), \
            pytest.warns(DataWarning, match="1 visits have no 'poi_category'"):
        enc = SpatialSemanticEncoder(region_margin=None).fit(X)
    table = enc.location_table("city")
    # (3,7) is visited twice with "cafe" and no venue column: one distinct (cell, category)
    assert table.loc[0, "poi_cafe"] == 1
    assert table[[f"poi_{c}" for c in TAXONOMY]].to_numpy().sum() == 1


def test_city_without_any_visited_category_is_silent():
    X = grid_frame().assign(poi_category=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        enc = SpatialSemanticEncoder(region_margin=None).fit(X)
    assert enc.location_table("city")[[f"poi_{c}" for c in TAXONOMY]].to_numpy().sum() == 0


# --------------------------------------------------------------------------------------------------
# a hand-made lat/lon city (New York): venues placed in UTM 18N metres, converted to degrees
# --------------------------------------------------------------------------------------------------
_TO_DEG = Transformer.from_crs("EPSG:32618", "EPSG:4326", always_xy=True)
# venue -> (easting, northing, category); cells are floor(metres / 500)
VENUES = {
    1: (585700.0, 4512300.0, "cafe"),        # cell (1171, 9024)
    2: (585800.0, 4512200.0, "cafe"),        # cell (1171, 9024)
    3: (585620.0, 4512480.0, "restaurant"),  # cell (1171, 9024)
    4: (586300.0, 4512300.0, "office"),      # cell (1172, 9024)
    5: (586250.0, 4511800.0, "shop"),        # cell (1172, 9023)
    6: (585900.0, 4512400.0, "office"),      # cell (1171, 9024), only in the second batch
}


def checkins(rows, with_venue_id=True):
    """Check-ins [(user, venue, 'YYYY-mm-dd HH:MM'), ...] in New York local time."""
    users, venues, times = zip(*rows)
    east = [VENUES[v][0] for v in venues]
    north = [VENUES[v][1] for v in venues]
    lon, lat = _TO_DEG.transform(east, north)
    frame = pd.DataFrame({
        "user_id": users,
        "started_at": pd.to_datetime(list(times)).tz_localize("America/New_York"),
        "lat": lat, "lon": lon,
        "poi_category": [VENUES[v][2] for v in venues],
        "city": "nyc",
    })
    if with_venue_id:
        frame.insert(1, "venue_id", venues)
    return frame


BATCH1 = [(1, 1, "2012-04-03 09:00"), (1, 1, "2012-04-03 12:00"), (1, 3, "2012-04-03 13:00"),
          (1, 4, "2012-04-03 18:00"), (2, 2, "2012-04-04 08:00"), (2, 1, "2012-04-04 09:30"),
          (2, 5, "2012-04-04 20:00")]
BATCH2 = [(3, 1, "2012-04-05 09:00"), (3, 6, "2012-04-05 10:00"), (3, 3, "2012-04-05 11:00")]


@pytest.mark.parametrize("with_venue_id", [True, False])
def test_poi_counts_from_distinct_visited_venues(with_venue_id):
    X = checkins(BATCH1, with_venue_id)
    enc = SpatialSemanticEncoder(region_margin=None).fit(X)
    grid = enc.cities_["nyc"].grid
    assert grid.crs == "EPSG:32618"
    table = enc.location_table("nyc").set_index("label")
    assert table.index.tolist() == ["nyc:1171_9024", "nyc:1172_9023", "nyc:1172_9024"]
    # venue 1 is visited three times but counts once: cafes 1 and 2, restaurant 3
    assert table.loc["nyc:1171_9024", "poi_cafe"] == 2
    assert table.loc["nyc:1171_9024", "poi_restaurant"] == 1
    assert table.loc["nyc:1172_9024", "poi_office"] == 1
    assert table.loc["nyc:1172_9023", "poi_shop"] == 1
    assert table[[f"poi_{c}" for c in TAXONOMY]].to_numpy().sum() == 5
    assert table["n_visits"].tolist() == [5, 1, 1]
    # centroids lie within 500 m of the visits of their cell (pyproj Geod)
    geod = Geod(ellps="WGS84")
    located = enc.locate(X)
    for i, row in X.iterrows():
        cell = table.loc[located.loc[i, "label"]]
        _, _, dist = geod.inv(row["lon"], row["lat"], cell["lon"], cell["lat"])
        assert dist < 500.0


def test_lat_lon_city_labels_and_oov_features():
    X = checkins(BATCH1)
    enc = SpatialSemanticEncoder(region_margin=None).fit(X)
    test = checkins([(9, 1, "2012-05-01 10:00"), (9, 6, "2012-05-01 11:00"),
                     (9, 4, "2012-05-01 12:00")])
    # venue 6 is in a known cell (1171, 9024); move the last visit 3 km north: unknown cell
    lon, lat = _TO_DEG.transform(586300.0, 4515300.0)  # cell (1172, 9030)
    test.loc[2, ["lat", "lon"]] = [lat, lon]
    located = enc.locate(test)
    assert located["label"].tolist() == ["nyc:1171_9024", "nyc:1171_9024", "nyc:1172_9030"]
    assert located["location_id"].tolist() == [0, 0, -1]
    assert located["ix"].tolist() == [1171, 1171, 1172] and located["iy"].tolist() == [9024, 9024, 9030]
    out = enc.transform(test)
    # out of vocabulary: no POIs, coordinates from the grid, the bin of a never-visited cell
    assert out[2, :N_POI].sum() == 0
    table = enc.cities_["nyc"]
    xy = np.array([[1172.5 * 500, 9030.5 * 500]])
    np.testing.assert_allclose(out[2, N_POI:N_POI + 2], ((xy - table.coord_mean) / table.coord_std)[0], rtol=1e-5)
    # visit counts [5, 1, 1] plus a 0: shares 0, 1/4, 1/4, 3/4 -> the unseen cell is bin 7
    assert table.unseen_popularity == 7
    assert out[2, -1] == 7
    assert out[0, -1] == 1


def test_oov_cell_of_grid_city():
    enc = SpatialSemanticEncoder(region_margin=None).fit(grid_frame())
    test = pd.DataFrame({"user_id": [5, 5], "day": [3, 3], "slot": [1, 2], "x": [7, 4], "y": [7, 7]})
    located = enc.locate(test)
    assert located["location_id"].tolist() == [-1, 1]
    assert located["label"].tolist() == ["city:7_7", "city:4_7"]
    out = enc.transform(test)
    # x = 3500 m -> (3500 - 2000) / 408.248 = 3.674235; y = 3500 -> 0.7071068
    np.testing.assert_allclose(out[0, N_POI:N_POI + 2], [3.6742346, 0.7071068], rtol=1e-6)
    # visit counts [2, 1, 1] plus 0: shares 0, 1/4, 1/4, 3/4 -> unseen bin 7
    assert out[0, -1] == 7
    assert out[1, -1] == 5


# --------------------------------------------------------------------------------------------------
# row order and index handling
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("index", [
    ["b", "a", "b", "c"],            # non-unique strings
    [2.5, -1.0, 7.25, 0.0],          # non-integer
    [3, 3, 3, 3],                    # all equal
    pd.MultiIndex.from_tuples([("u", 1), ("u", 0), ("v", 2), ("u", 5)]),
])
def test_transform_follows_x_order_with_any_index(index):
    # unsorted: time goes backwards, users interleaved
    X = pd.DataFrame({
        "user_id": [2, 1, 1, 1],
        "day": [0, 0, 0, 0],
        "slot": [10, 20, 16, 18],
        "x": [5, 3, 3, 4],
        "y": [1, 7, 7, 7],
    }, index=index)
    enc = SpatialSemanticEncoder(region_margin=None).fit(X)
    located = enc.locate(X)
    assert located.index.equals(X.index)
    assert located["label"].tolist() == ["city:5_1", "city:3_7", "city:3_7", "city:4_7"]
    out = enc.transform(X)
    # popularity of (5,1), (3,7), (3,7), (4,7): bins 5, 1, 1, 5
    assert out[:, -1].tolist() == [5, 1, 1, 5]
    np.testing.assert_allclose(out[:, N_POI], [1.2247449, -1.2247449, -1.2247449, 0.0], rtol=1e-6)


def test_caller_frame_never_modified():
    X = checkins(BATCH1).iloc[::-1]
    X.index = ["g", "f", "e", "d", "c", "b", "a"]
    pois = pd.DataFrame({"city": ["nyc"], "lat": [40.757], "lon": [-73.985], "category": ["cafe"]})
    X_before, pois_before = X.copy(), pois.copy()
    enc = SpatialSemanticEncoder(region_margin=None).fit(X, pois=pois)
    enc.partial_fit(X, pois=pois)
    enc.transform(X)
    enc.locate(X)
    enc.set_output(transform="pandas").fit_transform(X)
    pd.testing.assert_frame_equal(X, X_before)
    pd.testing.assert_frame_equal(pois, pois_before)


# --------------------------------------------------------------------------------------------------
# partial_fit
# --------------------------------------------------------------------------------------------------
def test_partial_fit_adds_a_city_and_accumulates_visits_of_a_known_city():
    enc = SpatialSemanticEncoder(region_margin=None).fit(grid_frame())
    more = pd.DataFrame({"user_id": [7, 7], "day": [1, 1], "slot": [3, 4], "x": [3, 6], "y": [7, 6]})
    enc.partial_fit(more)
    table = enc.location_table("city")
    # known cells keep their ids order (sorted), (6,6) joins; (3,7) now has 3 visits
    assert table["label"].tolist() == ["city:3_7", "city:4_7", "city:5_1", "city:6_6"]
    assert table["n_visits"].tolist() == [3, 1, 1, 1]
    # shares 0, 1/4, 1/4, 1/4 -> bins 1, 5, 5, 5
    assert table["popularity"].tolist() == [1, 5, 5, 5]
    # the z-scoring of the first fit is kept, so known cells keep their coordinates
    np.testing.assert_allclose(table["x_z"][:3], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)

    enc.partial_fit(checkins(BATCH1))
    assert list(enc.cities_) == ["city", "nyc"]
    assert enc.location_table("nyc")["n_visits"].tolist() == [5, 1, 1]
    assert enc.location_table("city")["n_visits"].tolist() == [3, 1, 1, 1]  # untouched
    # partial_fit on an unfitted encoder fits it
    assert list(SpatialSemanticEncoder(region_margin=None).partial_fit(grid_frame()).cities_) == ["city"]


def test_fit_forgets_earlier_cities():
    enc = SpatialSemanticEncoder(region_margin=None).fit(checkins(BATCH1))
    enc.fit(grid_frame())
    assert list(enc.cities_) == ["city"]


def test_partial_fit_unites_visited_venues_without_double_counting():
    enc = SpatialSemanticEncoder(region_margin=None).fit(checkins(BATCH1))
    enc.partial_fit(checkins(BATCH2))
    table = enc.location_table("nyc").set_index("label")
    # batch 2 revisits venues 1 and 3 (already counted) and adds venue 6 (office) in (1171, 9024)
    assert table.loc["nyc:1171_9024", "poi_cafe"] == 2
    assert table.loc["nyc:1171_9024", "poi_restaurant"] == 1
    assert table.loc["nyc:1171_9024", "poi_office"] == 1
    # cells not revisited keep their POIs
    assert table.loc["nyc:1172_9024", "poi_office"] == 1
    assert table.loc["nyc:1172_9023", "poi_shop"] == 1
    assert table["n_visits"].tolist() == [8, 1, 1]


def test_partial_fit_keeps_poi_frame_counts():
    pois = pd.DataFrame({"city": "nyc", "lat": [40.757], "lon": [-73.984], "category": ["finance"],
                         "count": [3]})  # in cell (1171, 9024)
    enc = SpatialSemanticEncoder(region_margin=None).fit(checkins(BATCH1), pois=pois)
    table = enc.location_table("nyc").set_index("label")
    assert table.loc["nyc:1171_9024", "poi_finance"] == 3
    assert table[[f"poi_{c}" for c in TAXONOMY]].to_numpy().sum() == 3  # the frame, not the visits
    # more visits (with poi_category) of the same city do not replace the POI frame's counts
    enc.partial_fit(checkins(BATCH2))
    table = enc.location_table("nyc").set_index("label")
    assert table.loc["nyc:1171_9024", "poi_finance"] == 3
    assert table[[f"poi_{c}" for c in TAXONOMY]].to_numpy().sum() == 3
    # a new POI frame replaces them
    enc.partial_fit(checkins(BATCH2), pois=pois.assign(count=[1]))
    assert enc.location_table("nyc").set_index("label").loc["nyc:1171_9024", "poi_finance"] == 1


# --------------------------------------------------------------------------------------------------
# scikit-learn API
# --------------------------------------------------------------------------------------------------
def test_not_fitted_and_unknown_city_errors():
    enc = SpatialSemanticEncoder(region_margin=None)
    for call in (enc.transform, enc.locate):
        with pytest.raises(NotFittedError):
            call(grid_frame())
    with pytest.raises(NotFittedError):
        enc.get_feature_names_out()
    enc.fit(grid_frame())
    with pytest.raises(ValueError, match="nyc"):
        enc.transform(checkins(BATCH1))
    with pytest.raises(KeyError, match="nyc"):
        enc.location_table("nyc")


@pytest.mark.parametrize("cell_size", [0, -500.0, "500", None])
def test_invalid_cell_size(cell_size):
    enc = SpatialSemanticEncoder(cell_size=cell_size, region_margin=None)
    assert enc.cell_size is cell_size  # stored unchanged, validated in fit
    with pytest.raises(ValueError, match="cell_size"):
        enc.fit(grid_frame())


def test_cell_size_of_lat_lon_city():
    enc = SpatialSemanticEncoder(cell_size=1000.0, region_margin=None).fit(checkins(BATCH1))
    # venues 1-3: (585, 4512); venue 4 (586300, 4512300): (586, 4512); venue 5 (586250, 4511800):
    # (586, 4511)
    table = enc.location_table("nyc")
    assert table["label"].tolist() == ["nyc:585_4512", "nyc:586_4511", "nyc:586_4512"]
    assert table["n_visits"].tolist() == [5, 1, 1]


def test_set_output_pandas_with_feature_names():
    X = grid_frame()
    X.index = ["r1", "r0", "r1", "r9"]
    enc = SpatialSemanticEncoder(region_margin=None).set_output(transform="pandas")
    out = enc.fit_transform(X)
    assert isinstance(out, pd.DataFrame)
    assert out.columns.tolist() == enc.get_feature_names_out().tolist()
    assert out.index.equals(X.index)
    assert out["popularity"].tolist() == [1, 5, 1, 5]
    np.testing.assert_allclose(out.to_numpy(), SpatialSemanticEncoder(region_margin=None).fit(X).transform(X))


def test_clone_and_pickle_round_trip():
    enc = SpatialSemanticEncoder(cell_size=250.0, region_margin=None)
    assert clone(enc).get_params() == {"cell_size": 250.0, "region_margin": None, "categories": "auto",
                                         "popularity_rank": "vocabulary"}
    X = checkins(BATCH1)
    enc.fit(X)
    fresh = clone(enc)
    assert not hasattr(fresh, "cities_") and fresh.cell_size == 250.0
    again = pickle.loads(pickle.dumps(enc))
    np.testing.assert_array_equal(again.transform(X), enc.transform(X))
    pd.testing.assert_frame_equal(again.location_table("nyc"), enc.location_table("nyc"))
    # a pickled encoder keeps learning like the original
    again.partial_fit(checkins(BATCH2))
    enc.partial_fit(checkins(BATCH2))
    np.testing.assert_array_equal(again.transform(X), enc.transform(X))


def test_cell_labels_broadcast():
    assert cell_labels("a", [1, -2], [3, 4]).tolist() == ["a:1_3", "a:-2_4"]
    assert cell_labels(["a", "bb"], [1, 2], [3, 4]).tolist() == ["a:1_3", "bb:2_4"]


# ------------------------------------------------------------------ open vocabulary (region)
def test_region_is_the_widened_box_of_pois_and_visits():
    # cells x 3..5, y 1..7, widened by 1000 m = 2 cells of 500 m: x 1..7 (7) by y -1..9 (11)
    enc = SpatialSemanticEncoder(region_margin=1000.0).fit(grid_frame())
    table = enc.location_table("city")
    assert len(table) == 7 * 11
    assert (table["ix"].min(), table["ix"].max(), table["iy"].min(), table["iy"].max()) == (1, 7, -1, 9)
    # visit counts stay where the visits are; every other cell is a never-visited candidate
    visited = table.set_index("label")["n_visits"]
    assert visited[["city:3_7", "city:4_7", "city:5_1"]].tolist() == [2, 1, 1] and visited.sum() == 4
    assert table.loc[table["n_visits"] == 0, "popularity"].nunique() == 1
    # a margin of 1 m still takes whole cells; 0 m is the bare box
    assert SpatialSemanticEncoder(region_margin=1.0).fit(grid_frame()).cities_["city"].n_locations == 5 * 9
    assert SpatialSemanticEncoder(region_margin=0.0).fit(grid_frame()).cities_["city"].n_locations == 3 * 7


def test_region_makes_unvisited_cells_of_the_city_candidates():
    enc = SpatialSemanticEncoder().fit(grid_frame())
    X = grid_frame().assign(x=[6, 2, 4, 4], y=[4, 5, 6, 2])          # never visited in fit, inside the box
    assert (enc.locate(X)["location_id"] >= 0).all()
    far = grid_frame().assign(x=[300, 3, 3, 3])                        # 150 km away: still outside
    assert enc.locate(far)["location_id"].tolist()[0] == -1


def test_region_ignores_a_stray_point_far_away():
    frame = pd.DataFrame({"user_id": np.repeat(np.arange(50), 40), "day": 0, "slot": 10,
                          "x": np.tile(np.arange(40), 50), "y": np.repeat(np.arange(50), 40)})
    stray = pd.DataFrame({"user_id": [99], "day": [0], "slot": [10], "x": [100_000], "y": [100_000]})
    enc = SpatialSemanticEncoder(region_margin=0.0).fit(pd.concat([frame, stray], ignore_index=True))
    # the 0.1 % quantile box is the 40 x 50 block; the stray cell is a candidate of its own
    assert enc.cities_["city"].n_locations == 40 * 50 + 1


def test_region_of_far_apart_pieces_is_their_neighbourhoods():
    frame = pd.DataFrame({"user_id": [1] * 1000 + [2] * 1000, "day": 0, "slot": 10,
                          "x": [0] * 1000 + [1000] * 1000, "y": [0] * 1000 + [1000] * 1000})
    enc = SpatialSemanticEncoder(region_margin=500.0).fit(frame)     # the box would hold 1001 x 1001 cells
    assert enc.cities_["city"].n_locations == 2 * 9                  # 3 x 3 cells around each piece


def test_region_margin_is_checked():
    for bad in (-1.0, float("nan"), "2000", True):
        with pytest.raises(ValueError, match="region_margin"):
            SpatialSemanticEncoder(region_margin=bad).fit(grid_frame())


def test_a_failed_fit_or_partial_fit_leaves_the_encoder_as_it_was():
    # city "b" fails (every point at null island: no grid) after city "a" was built
    a = pd.DataFrame({"city": "a", "user_id": 1, "day": 0, "slot": [1, 2], "lat": [40.7, 40.71], "lon": [-74.0, -74.0]})
    b = pd.DataFrame({"city": "b", "user_id": 2, "day": 0, "slot": [1, 2], "lat": [0.0, 0.0], "lon": [0.0, 0.0]})
    enc = SpatialSemanticEncoder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(SchemaError, match="no grid can be laid"):
            enc.fit(pd.concat([a, b], ignore_index=True))
        with pytest.raises(NotFittedError):
            enc.transform(a)
        enc.fit(a)
        with pytest.raises(SchemaError, match="no grid can be laid"):
            enc.partial_fit(pd.concat([a.assign(slot=[5, 6]), b], ignore_index=True))
        assert list(enc.cities_) == ["a"] and enc.cities_["a"].visit_counts.sum() == 2
        with pytest.raises(SchemaError, match="no grid can be laid"):
            enc.fit(b)
        assert list(enc.cities_) == ["a"] and enc.cities_["a"].visit_counts.sum() == 2


def test_a_cell_outside_the_region_gets_the_bin_of_the_never_visited_cells_inside():
    # 100 cells, 5 visited: never-visited cells have share 5/100 -> bin 3; counted as one more
    # cell (101), an appended one had share 5/101 < .05 -> bin 2 before
    X = pd.DataFrame({"user_id": 1, "day": 0, "slot": range(5), "x": [0, 3, 0, 3, 1], "y": [0, 0, 3, 3, 1]})
    enc = SpatialSemanticEncoder(region_margin=1500.0).fit(X)
    assert enc.cities_["city"].n_locations == 100
    far = pd.DataFrame({"user_id": 2, "day": 0, "slot": [1, 2], "x": [1, 40], "y": [2, 40]})
    assert enc.transform(far)[:, -1].tolist() == [3, 3]
