"""Tests of the checksummed fetchers against the local copies (never the network)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

import trajmoe.datasets as datasets
from trajmoe.datasets import _fetchers

FETCHERS = sorted(n for n in datasets.__all__ if n.startswith("fetch_"))


def test_a_fetcher_for_every_data_set():
    assert FETCHERS == ["fetch_flickr", "fetch_foursquare_nyc", "fetch_foursquare_singapore",
                        "fetch_geolife", "fetch_gowalla_ca", "fetch_movegpt", "fetch_osm_helsinki",
                        "fetch_yjmob100k"]


@pytest.mark.parametrize("name", FETCHERS)
def test_local_copy_verifies(name, data_home):
    """Every fetcher finds and verifies (SHA-256) the local copies, without the network."""
    path = getattr(datasets, name)(data_home, download=False)
    assert path.exists() and str(path).startswith(str(data_home))
    doc = getattr(datasets, name).__doc__
    assert "Raises" in doc and "SHA-256" in doc and "Source:" in doc


def test_registry_matches_the_files_the_loaders_read(data_home):
    """Each registered file exists locally and its recorded hash is its SHA-256."""
    for spec in _fetchers._DATASETS.values():
        for relpath, (sha, url) in spec.files.items():
            digest = hashlib.sha256((data_home / relpath).read_bytes()).hexdigest()
            assert digest == sha, relpath
            assert url is None or url.startswith("https://")


def _copy(data_home, tmp_path, relpath):
    target = tmp_path / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_home / relpath, target)
    return target


def test_corrupted_copy_raises(data_home, tmp_path):
    target = _copy(data_home, tmp_path, "osm/Helsinki.osm.pbf")
    assert datasets.fetch_osm_helsinki(tmp_path, download=False) == target
    with open(target, "r+b") as f:  # flip one byte
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match=r"corrupted or a different version: SHA-256 [0-9a-f]{64}, "
                                         r"expected b73e9c2c"):
        datasets.fetch_osm_helsinki(tmp_path, download=False)


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        datasets.fetch_foursquare_nyc(tmp_path)  # no public address: no download tried
    msg = str(err.value)
    assert str(tmp_path / "foursquare_nyc" / "checkins.csv.gz") in msg
    assert "94cc65b6" in msg and "no public address" in msg and "the data_home argument" in msg
    with pytest.raises(FileNotFoundError, match=r"download=False.*raw\.githubusercontent\.com"):
        datasets.fetch_geolife(tmp_path, download=False)


def test_failed_download_is_reported(tmp_path, monkeypatch):
    """No network here: the download is replaced by one that fails as pooch would."""
    calls = []

    def offline(url, sha, path):
        calls.append(url)
        return ConnectionError("no network")

    monkeypatch.setattr(_fetchers, "_download", offline)
    with pytest.raises(FileNotFoundError, match=r"downloading https://\S+ failed "
                                                r"\(ConnectionError: no network\).*Put the file at"):
        datasets.fetch_osm_helsinki(tmp_path)
    assert calls == [_fetchers._DATASETS["osm_helsinki"].files["osm/Helsinki.osm.pbf"][1]]


def test_download_writes_into_the_data_home(data_home, tmp_path, monkeypatch):
    """A successful download (simulated by copying the local file) is verified and used."""

    def fake(url, sha, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_home / "osm" / "Helsinki.osm.pbf", path)

    monkeypatch.setattr(_fetchers, "_download", fake)
    path = datasets.fetch_osm_helsinki(tmp_path)
    assert path == tmp_path / "osm" / "Helsinki.osm.pbf" and path.is_file()


DERIVED = sorted(name for name, spec in _fetchers._DATASETS.items()
                 if any(url is None for _, url in spec.files.values()))


def test_the_derived_data_sets():
    """Five data sets have no download address; the docs list them and how they were made."""
    assert DERIVED == ["flickr", "foursquare_nyc", "gowalla_ca", "movegpt", "yjmob100k"]
    docs = (Path(__file__).resolve().parent.parent / "docs" / "datasets.rst").read_text()
    assert "\nFiles that must be derived\n-------" in docs
    for name in DERIVED:
        spec = _fetchers._DATASETS[name]
        assert spec.derivation and spec.section
        assert f"\n{spec.section}\n{'~' * len(spec.section)}\n" in docs, spec.section
        assert spec.section in getattr(datasets, f"fetch_{name}").__doc__.replace("\n    ", " ")


@pytest.mark.parametrize("name", DERIVED)
def test_missing_derived_file_says_how_it_was_made(name, tmp_path, monkeypatch):
    """Without a download address: the exact path, the SHA-256, how the file was made and the
    docs section, and no download is tried."""
    monkeypatch.setattr(_fetchers, "_download", lambda *args: pytest.fail("no download without an address"))
    spec = _fetchers._DATASETS[name]
    relpath, (sha, _) = next(iter(spec.files.items()))
    with pytest.raises(FileNotFoundError) as err:
        getattr(datasets, f"fetch_{name}")(tmp_path)
    msg = str(err.value)
    assert f"Put the file at {tmp_path / relpath} " in msg and sha in msg
    assert f"How it was made: {spec.derivation}." in msg
    assert f'docs/datasets.rst, section "Files that must be derived", subsection "{spec.section}"' in msg


def test_mismatch_of_a_derived_file_points_at_the_docs(data_home, tmp_path):
    target = _copy(data_home, tmp_path, "gowalla_ca/checkins.csv.gz")
    target.write_bytes(target.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"corrupted or a different version.*Replace it with the "
                                         r"original\. How it was made: .*Files that must be derived"):
        datasets.fetch_gowalla_ca(tmp_path, download=False)
