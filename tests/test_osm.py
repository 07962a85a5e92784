"""Tests of trajmoe.datasets.read_osm_pois on the real Helsinki extract."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from trajmoe import SpatialSemanticEncoder
from trajmoe.datasets import fetch_osm_helsinki, read_osm_pois
from trajmoe.exceptions import DataWarning
from trajmoe.schema import validate_pois
from trajmoe.taxonomy import TAXONOMY

pytest.importorskip("osmium")


@pytest.fixture(scope="module")
def helsinki(data_home):
    path = fetch_osm_helsinki(data_home, download=False)
    with pytest.warns(DataWarning, match=r"Helsinki\.osm\.pbf: 59 of .* POIs .*left out"):
        pois, unmapped = read_osm_pois(path, return_unmapped=True)
    return pois, unmapped


def test_helsinki_pois_are_a_valid_poi_frame(helsinki):
    pois, _ = helsinki
    validate_pois(pois)
    assert list(pois.columns) == ["osm_type", "osm_id", "name", "lat", "lon", "category",
                                  "source_category", "count", "city"]
    assert len(pois) == 2401 and set(pois["osm_type"]) == {"node", "way"}
    assert set(pois["category"]) <= set(TAXONOMY) and (pois["city"] == "helsinki").all()
    assert pois["lat"].between(60.1, 60.3).all() and pois["lon"].between(24.8, 25.1).all()
    assert not pois.duplicated(["osm_type", "osm_id"]).any()
    # tags onto the taxonomy as the shipped OSM table says
    cats = pois.groupby("source_category")["category"].first()
    assert cats["amenity=cafe"] == "cafe" and cats["amenity=restaurant"] == "restaurant"
    assert cats["shop=supermarket"] == "food" and cats["tourism=hotel"] == "accommodation"


def test_under_ten_percent_of_named_amenity_shop_tags_unmapped(helsinki, data_home):
    pois, unmapped = helsinki
    assert unmapped.name == "n_elements" and unmapped.is_monotonic_decreasing
    assert unmapped.sum() == 59 and unmapped["amenity=life_ring"] == 8
    # share among the NAMED amenity/shop POIs, counted here independently of the reader
    import osmium

    from trajmoe.taxonomy import mapping_table

    known = set(mapping_table("osm")["source_name"])
    named = miss = 0
    for obj in osmium.FileProcessor(str(fetch_osm_helsinki(data_home, download=False))):
        if "name" not in obj.tags or obj.type_str() == "r":
            continue
        for key in ("amenity", "shop"):
            if key in obj.tags:
                value = obj.tags[key]
                named += 1
                miss += f"{key}={value}" not in known and f"{key}={value.split(';')[0]}" not in known
                break
    assert named > 1000
    assert miss / named < 0.10, (miss, named)


def test_multi_valued_tag_takes_its_first_value(helsinki):
    pois, unmapped = helsinki
    assert "amenity=nightclub;restaurant" not in unmapped.index
    assert "amenity=nightclub" in set(pois["source_category"])


def test_city_and_errors(data_home, tmp_path):
    path = fetch_osm_helsinki(data_home, download=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        shops = read_osm_pois(path, city="hki", keys=("shop",))
    assert (shops["city"] == "hki").all()
    # with only "shop" as a POI key, amenities count only through mapped-only keys: none
    assert not shops["source_category"].str.startswith("amenity=").any()
    with pytest.raises(FileNotFoundError):
        read_osm_pois(tmp_path / "missing.osm.pbf")
    # a key no element has (misspelt): said, and the other keys still read
    with pytest.warns(DataWarning, match=r"no element has the keys \['Shop'\] \(misspelt\?"):
        read_osm_pois(path, keys=("Shop", "amenity"))


def test_encoder_counts_osm_pois(helsinki):
    pois, _ = helsinki
    sample = pois.iloc[::50]
    visits = pd.DataFrame({"user_id": 1, "day": range(len(sample)), "slot": 16,
                           "lat": sample["lat"].to_numpy(), "lon": sample["lon"].to_numpy(),
                           "city": "helsinki"})
    enc = SpatialSemanticEncoder(region_margin=None).fit(visits, pois=pois)
    assert enc.cities_["helsinki"].poi_counts.sum() == len(pois)
    # the raw OSM tags are understood too (categories="auto")
    raw = pois.assign(category=pois["source_category"])
    enc_raw = SpatialSemanticEncoder(region_margin=None).fit(visits, pois=raw)
    assert (enc_raw.cities_["helsinki"].poi_counts == enc.cities_["helsinki"].poi_counts).all()
