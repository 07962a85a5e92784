"""Tests of trajmoe.taxonomy: the 34 categories and full coverage of every real vocabulary."""

from __future__ import annotations

import ast
import warnings

import numpy as np
import pandas as pd
import pytest

from trajmoe._constants import N_CATEGORIES
from trajmoe.schema import DataWarning
from trajmoe.taxonomy import SOURCES, TAXONOMY, detect_source, map_categories, mapping_table

FLICKR_CITIES = ("Edin", "Melb", "Osak", "Toro")


def test_taxonomy_is_the_papers_34_in_order():
    assert len(TAXONOMY) == 34 and len(set(TAXONOMY)) == 34
    assert N_CATEGORIES == len(TAXONOMY)                  # the networks' default POI features
    assert TAXONOMY[:5] == ("finance", "cafe", "dormitory", "transport", "ice_cream")
    assert TAXONOMY[-3:] == ("accommodation", "tourism", "kindergarten")
    assert TAXONOMY.index("public_transport") == 14


@pytest.mark.parametrize("source", SOURCES)
def test_tables_target_only_taxonomy_names(source):
    table = mapping_table(source)
    assert list(table.columns) == ["source_name", "category"]
    assert table["source_name"].is_unique
    assert set(table["category"]) <= set(TAXONOMY)
    assert table["source_name"].str.strip().eq(table["source_name"]).all()


def test_mapping_table_is_a_copy():
    t = mapping_table("flickr")
    t.loc[0, "category"] = "zzz"
    assert "zzz" not in set(mapping_table("flickr")["category"])


def test_every_nyc_foursquare_name_is_mapped(dataset_dir):
    cats = pd.read_csv(dataset_dir("foursquare_nyc") / "checkins.csv.gz", usecols=["cat"])["cat"]
    names = cats.unique()
    assert len(names) == 205
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        mapped = map_categories(names, "foursquare")
    assert mapped.notna().all() and set(mapped) <= set(TAXONOMY)
    assert set(names) == set(mapping_table("foursquare")["source_name"])


def test_every_yjmob_name_is_mapped(dataset_dir):
    path = dataset_dir("yjmob100k") / "POI_datacategories.csv"
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    names = [n for n in names if n]
    assert len(names) == 85 and names[0] == "Food" and names[17] == "Café"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        mapped = map_categories(names, "yjmob")
    assert mapped.notna().all() and set(mapped) <= set(TAXONOMY)
    # raw names with trailing spaces ("Sweets ", "Laundry ") map as well
    assert map_categories(["Sweets ", "Laundry "], "yjmob").tolist() == ["ice_cream", "livelihood"]


def test_every_flickr_name_is_mapped(dataset_dir):
    folder = dataset_dir("flickr_tours")
    names = pd.concat([pd.read_csv(folder / f"poi-{c}.csv")["poiCat"] for c in FLICKR_CITIES])
    assert names.nunique() == 17
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        mapped = map_categories(names, "flickr")
    assert mapped.notna().all()


def _gowalla_names(dataset_dir) -> pd.Series:
    """Gowalla name of every check-in, parsed here independently of the loader (NaN: none)."""
    raw = pd.read_csv(dataset_dir("gowalla_ca") / "checkins.csv.gz",
                      usecols=["POI_catid_code", "POI_catname"])

    def parse(text):  # "[{'url': '/categories/64'; 'name': 'Other - Food '}]", or "dummy"
        if text == "dummy":
            return None
        (entry,) = ast.literal_eval(text.replace("'; 'name'", "', 'name'"))
        name = entry["name"].strip()
        return "Subway (sandwich chain)" if entry["url"] == "/categories/454" else name

    names = {t: parse(t) for t in raw["POI_catname"].unique()}
    return raw["POI_catname"].map(names)


def test_gowalla_names_are_mapped_but_farm(dataset_dir):
    names = _gowalla_names(dataset_dir)
    assert len(names) == 48_104 and names.isna().sum() == 731  # "dummy": no category
    named = names.dropna()
    assert named.nunique() == 288  # 289 Gowalla categories; "Music" twice, "Subway" told apart
    with pytest.warns(DataWarning, match=r"21 of 47373 .*'Farm' \(21\)\."):
        mapped = map_categories(named, "gowalla")
    assert set(mapped.dropna()) <= set(TAXONOMY)
    # every name but "Farm" (3 spots: no single function) is mapped
    assert set(named[mapped.isna()]) == {"Farm"}
    assert set(mapping_table("gowalla")["source_name"]) == set(named) - {"Farm"}
    # share of check-ins with a taxonomy category: 99.96 % of the named ones, 98.4 % of all
    assert mapped.notna().sum() == 47_352
    assert mapped.notna().mean() == pytest.approx(0.99956, abs=1e-5)
    assert mapped.notna().sum() / len(names) == pytest.approx(0.98437, abs=1e-5)


@pytest.mark.parametrize(
    ("source", "name", "expected"),
    [
        ("foursquare", "Subway", "public_transport"),
        ("foursquare", "Bar", "pub"),
        ("foursquare", "Home (private)", "residential"),
        ("foursquare", "College Academic Building", "education"),
        ("foursquare", "Coffee Shop", "cafe"),
        ("foursquare", "Café", "cafe"),
        ("foursquare", "Ramen /  Noodle House", "restaurant"),
        ("foursquare", "Gym / Fitness Center", "sport"),
        ("foursquare", "Hotel", "accommodation"),
        ("foursquare", "Nursery School", "kindergarten"),
        ("foursquare", "Ice Cream Shop", "ice_cream"),
        ("foursquare", "Automotive Shop", "shop_transport"),
        ("foursquare", "Church", "religion"),
        ("foursquare", "Bank", "finance"),
        ("yjmob", "Transit Station", "public_transport"),
        ("yjmob", "Convenience Store", "commodity"),
        ("yjmob", "Kindergarten", "kindergarten"),
        ("yjmob", "City Hall", "government"),
        ("yjmob", "Hair Salon", "shop_beauty"),
        ("yjmob", "DIY Store", "home_improvement"),
        ("flickr", "Sports stadiums", "sport"),
        ("flickr", "Transport", "public_transport"),
        ("osm", "amenity=cafe", "cafe"),
        ("osm", "amenity=fast_food", "fast_food"),
        ("osm", "shop=supermarket", "food"),
        ("osm", "tourism=hotel", "accommodation"),
        ("osm", "leisure=fitness_centre", "sport"),
        ("osm", "office=travel_agent", "travel_agency"),
        ("osm", "building=dormitory", "dormitory"),
        ("osm", "amenity=recycling", "recycling"),
        ("osm", "amenity=marketplace", "marketplace"),
        ("gowalla", "Corporate Office", "office"),
        ("gowalla", "Starbucks", "cafe"),
        ("gowalla", "Other - Food", "restaurant"),
        ("gowalla", "Other - Food ", "restaurant"),  # the raw name carries a trailing space
        ("gowalla", "In-N-Out Burger", "fast_food"),
        ("gowalla", "Subway", "public_transport"),
        ("gowalla", "Subway (sandwich chain)", "fast_food"),
        ("gowalla", "Craftsman", "residential"),
        ("gowalla", "Dormitory", "dormitory"),
        ("gowalla", "Casino", "entertainment"),
        ("gowalla", "Disneyland Resort", "tourism"),
        ("gowalla", "Lions", "tourism"),
        ("gowalla", "Dive Bar", "pub"),
        ("gowalla", "Frozen Yogurt", "ice_cream"),
        ("gowalla", "Trader Joe's", "food"),
        ("gowalla", "Costco", "marketplace"),
        ("gowalla", "Walgreens", "health"),
        ("gowalla", "The Home Depot", "home_improvement"),
        ("gowalla", "Salon & Barbershop", "shop_beauty"),
        ("gowalla", "Women's Apparel", "boutique"),
        ("gowalla", "Bank & Financial", "finance"),
        ("gowalla", "Capitol Building", "government"),
        ("gowalla", "Post Office", "livelihood"),
        ("gowalla", "Luxury Hotel", "accommodation"),
    ],
)
def test_hand_checked_mappings(source, name, expected):
    assert map_categories([name], source).tolist() == [expected]


def test_osm_table_covers_every_category():
    assert set(mapping_table("osm")["category"]) == set(TAXONOMY)


def test_unmapped_names_warn_with_counts_and_become_nan():
    names = pd.Series(["Bar", "Moon Base", "Moon Base", None, "Subway"], index=list("abcde"))
    with pytest.warns(DataWarning, match=r"3 of 5 .*'Moon Base' \(2\), '<missing>' \(1\)"):
        out = map_categories(names, "foursquare")
    assert out.index.tolist() == list("abcde")
    assert out.isna().tolist() == [False, True, True, True, False]
    assert out["a"] == "pub" and out["e"] == "public_transport"
    assert len(out) == len(names)  # nothing dropped


def test_custom_mapping_and_unknown_source():
    assert map_categories(["Foo"], {"Foo": "cafe"}).tolist() == ["cafe"]
    with pytest.raises(ValueError, match="not taxonomy names"):
        map_categories(["Foo"], {"Foo": "coffee"})
    with pytest.raises(ValueError, match="unknown category source 'moon'"):
        map_categories(["Foo"], "moon")
    with pytest.raises(ValueError, match="unknown category source"):
        mapping_table("moon")


def test_map_categories_returns_str_series_for_lists():
    out = map_categories(np.array(["Bar", "Bar"]), "foursquare")
    assert isinstance(out, pd.Series) and out.tolist() == ["pub", "pub"]


# ------------------------------------------------------------------ raw names recognised
def _raw_nyc(data_home):
    from trajmoe.datasets import load_foursquare_nyc

    visits = load_foursquare_nyc(data_home).visits
    return visits, visits.assign(poi_category=visits["source_category"])


@pytest.mark.parametrize("source", SOURCES)
def test_detect_source_recognises_every_shipped_table(source):
    names = mapping_table(source)["source_name"]
    found, shares = detect_source(names, return_shares=True)
    assert found == source and shares[source] == 1.0
    assert detect_source(names.sample(frac=0.3, random_state=0)) == source


def test_detect_source_edge_cases():
    assert detect_source(list(TAXONOMY)) == "taxonomy"
    assert detect_source(["Moon Base", "Mars Base", "Bar"]) is None  # 1/3 < min_share 0.5
    assert detect_source(["Moon Base", "Mars Base", "Bar"], min_share=0.3) == "foursquare"
    assert detect_source([None, float("nan")]) is None
    with pytest.raises(ValueError, match="min_share"):
        detect_source(["Bar"], min_share=2)


def test_map_categories_auto_keeps_taxonomy_names():
    out = map_categories(["amenity=cafe", "shop=bakery", "cafe"])
    assert out.tolist() == ["cafe", "food", "cafe"]
    with pytest.warns(DataWarning, match=r"auto: foursquare.*'Moon Base' \(1\)"):
        map_categories(["Bar", "Subway", "Moon Base"])
    assert map_categories(["cafe", "pub"], "taxonomy").tolist() == ["cafe", "pub"]


def test_map_frame_categories_modes():
    from trajmoe.taxonomy import map_frame_categories

    X = pd.DataFrame({"user_id": [1, 2, 3], "poi_category": ["Bar", "Moon Base", None]})
    before = X.copy()
    with pytest.warns(DataWarning, match=r"1 of 3 rows .*became NaN: 'Moon Base' \(1\)"):
        nan = map_frame_categories(X)
    assert nan["poi_category"].tolist()[:1] == ["pub"] and nan["poi_category"].isna().tolist() == [False, True, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        keep = map_frame_categories(X, unmapped="keep")
    assert keep["poi_category"].tolist()[:2] == ["pub", "Moon Base"]
    with pytest.warns(DataWarning, match="rows were dropped"):
        assert map_frame_categories(X, unmapped="drop").index.tolist() == [0, 2]
    pd.testing.assert_frame_equal(X, before)
    mapped = X.assign(poi_category=["pub", "cafe", None])
    assert map_frame_categories(mapped) is mapped  # already taxonomy names: untouched
    assert map_frame_categories(X.drop(columns="poi_category")) is not None
    with pytest.raises(ValueError, match="unmapped"):
        map_frame_categories(X, unmapped="ignore")


def test_encoder_understands_raw_foursquare_names(data_home):
    """NYC check-ins in their original Foursquare names give the same POI features as the
    loader's taxonomy names, without a warning (issue: 31830 POIs were dropped before)."""
    from trajmoe import SpatialSemanticEncoder

    visits, raw = _raw_nyc(data_home)
    assert not raw["poi_category"].isin(TAXONOMY).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        enc_raw = SpatialSemanticEncoder().fit(raw)
    enc = SpatialSemanticEncoder().fit(visits)
    assert enc_raw.get_params()["categories"] == "auto"
    a, b = enc_raw.cities_["nyc"].poi_counts, enc.cities_["nyc"].poi_counts
    assert a.sum() > 4000 and (a == b).all()
    # the earlier behaviour, on request: names outside the taxonomy are reported and dropped
    with pytest.warns(DataWarning, match=r"outside the shared taxonomy.*'Home \(private\)'"):
        strict = SpatialSemanticEncoder(categories="taxonomy").fit(raw)
    assert strict.cities_["nyc"].poi_counts.sum() == 0


def test_encoder_categories_named_source_and_unmapped(data_home):
    from trajmoe import SpatialSemanticEncoder

    _, raw = _raw_nyc(data_home)
    sub = raw[raw["user_id"] < 50].copy()
    ref = SpatialSemanticEncoder(categories="foursquare").fit(sub).cities_["nyc"].poi_counts
    assert (SpatialSemanticEncoder().fit(sub).cities_["nyc"].poi_counts == ref).all()
    sub.iloc[:3, sub.columns.get_loc("poi_category")] = "Moon Base"
    with pytest.warns(DataWarning, match=r"3 POIs have a category outside .*'Moon Base': 3"):
        SpatialSemanticEncoder().fit(sub)
