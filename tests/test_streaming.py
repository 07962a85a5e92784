"""Streaming (trajmoe.streaming, trajmoe.nn.shards): cell tables by chunks equal one fit,
windows written to Parquet come back unchanged, and a model trains on them."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

pytest.importorskip("pyarrow")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from trajmoe import SpatialSemanticEncoder, TrajMoERegressor  # noqa: E402
from trajmoe.datasets import load_foursquare_nyc, load_yjmob100k  # noqa: E402
from trajmoe.exceptions import DataWarning  # noqa: E402
from trajmoe.nn.shards import ParquetBatchLoader  # noqa: E402
from trajmoe.scale import pretrain  # noqa: E402
from trajmoe.streaming import ChunkedEncoder, write_windows  # noqa: E402

TINY = dict(encoder=SpatialSemanticEncoder(region_margin=None), d_model=16, n_layers=1, n_heads=2, max_epochs=2,
            batch_size=16, device="cpu", random_state=0)


def by_users(visits, n_chunks):
    """``n_chunks`` frames, each with all the visits of its users."""
    users = visits["user_id"].unique()
    return [visits[visits["user_id"].isin(part)] for part in np.array_split(users, n_chunks)]


@pytest.fixture(scope="module")
def nyc(data_home):
    return load_foursquare_nyc()


@pytest.fixture(scope="module")
def yjmob(data_home):
    return load_yjmob100k("A")


def assert_same_tables(expected, got):
    assert list(got.cities_) == list(expected.cities_)
    for city, table in expected.cities_.items():
        other = got.cities_[city]
        assert other.grid == table.grid
        for name in ("cells", "poi_counts", "visit_counts", "coord_mean", "coord_std", "popularity"):
            np.testing.assert_array_equal(getattr(other, name), getattr(table, name), err_msg=f"{city}: {name}")
        assert other.excluded == table.excluded
        if table.venues is None:
            assert other.venues is None
        else:
            venues = table.venues.sort_values(list(table.venues.columns)).reset_index(drop=True)
            pd.testing.assert_frame_equal(other.venues, venues)
    np.testing.assert_array_equal(got.feature_names_out_, expected.feature_names_out_)


def test_chunked_encoder_gives_the_tables_of_one_fit(nyc, yjmob):
    """Two real cities (lat/lon check-ins with venues; x/y cells), 7 chunks of users, with an
    outlier, a null-island visit and an exact duplicate row added."""
    visits = pd.concat([nyc.visits, yjmob.visits], ignore_index=True)
    extra = nyc.visits.iloc[[0, 1, 2]].copy()
    extra.loc[extra.index[0], ["lat", "lon"]] = (48.85, 2.35)       # Paris: an outlier of New York
    extra.loc[extra.index[1], ["lat", "lon"]] = (0.0, 0.0)          # null island
    visits = pd.concat([visits, extra], ignore_index=True)           # row 2 is now an exact duplicate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        expected = SpatialSemanticEncoder().fit(visits)
        chunked = ChunkedEncoder()
        for chunk in by_users(visits, 7):
            chunked.partial_fit(chunk)
    assert chunked.n_chunks_ == 7
    assert expected.cities_["nyc"].excluded == {"duplicate_visits": 1, "outlier_visits": 2, "outlier_pois": 0}
    assert_same_tables(expected, chunked.encoder_)


def test_chunked_encoder_with_a_poi_frame(yjmob):
    pois = yjmob.pois[yjmob.pois["city"] == "yjmob_A"]
    expected = SpatialSemanticEncoder(region_margin=1000.0).fit(yjmob.visits, pois=pois)
    chunked = ChunkedEncoder(SpatialSemanticEncoder(region_margin=1000.0))
    for i, chunk in enumerate(by_users(yjmob.visits, 4)):
        chunked.partial_fit(chunk, pois=pois if i == 0 else None)
    assert_same_tables(expected, chunked.encoder_)


def test_a_user_in_two_chunks_is_refused(yjmob):
    visits = yjmob.visits[yjmob.visits["user_id"] == yjmob.visits["user_id"].iloc[0]]
    chunked = ChunkedEncoder().partial_fit(visits.iloc[:10])
    with pytest.raises(ValueError, match="appear in two chunks"):
        chunked.partial_fit(visits.iloc[10:])


def test_a_refused_chunk_leaves_the_chunked_encoder_as_it_was(nyc, yjmob):
    """A chunk refused for one city keeps none of its other cities: the corrected chunk is then
    taken (it used to say that the other city's users appear in two chunks), and the tables are
    those of one fit."""
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="before the first partial_fit"):
        ChunkedEncoder().encoder_
    first, second = by_users(yjmob.visits, 40)[:2]
    other = by_users(nyc.visits, 20)[0]
    chunked = ChunkedEncoder().partial_fit(first)
    with pytest.raises(ValueError, match="appear in two chunks"):
        chunked.partial_fit(pd.concat([other, first.iloc[:5]]))
    assert chunked.n_chunks_ == 1 and set(chunked.encoder_.cities_) == {"yjmob_A"}
    chunked.partial_fit(pd.concat([other, second]))
    expected = SpatialSemanticEncoder().fit(pd.concat([first, other, second]))
    assert_same_tables(expected, chunked.encoder_)
    fresh = ChunkedEncoder()
    with pytest.raises(ValueError, match="appear in two chunks"):       # a first chunk refused: still unfitted
        fresh.partial_fit(first).partial_fit(first)


def _window_rows(batches):
    """Every window of (X, y, share) batches as a tuple of its tokens and targets."""
    rows = []
    for X, y, share in batches:
        assert share.real
        for i in range(len(X["city"])):
            n = int((X["location"][i] >= 0).sum())
            rows.append((int(X["city"][i]), *(tuple(X[k][i, :n].tolist()) for k in ("location", "slot", "dow", "gap")),
                         tuple(y["next_location"][i, :n].tolist()), tuple(y["next_gap"][i, :n].tolist())))
    return sorted(rows)


@pytest.fixture(scope="module")
def store(nyc, yjmob, tmp_path_factory):
    visits = pd.concat([by_users(nyc.visits, 20)[0], by_users(yjmob.visits, 40)[0]], ignore_index=True)
    model = TrajMoERegressor(**TINY, validation_fraction=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        written = write_windows(model, by_users(visits, 3), tmp_path_factory.mktemp("store"), rows_per_group=50)
    return visits, model, written


def test_stored_windows_come_back_unchanged(store):
    visits, model, written = store
    assert_same_tables(SpatialSemanticEncoder(region_margin=None).fit(visits), written.encoder)
    in_memory = TrajMoERegressor(**TINY, validation_fraction=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        in_memory._fit_encoder(visits, None, partial=False)
        windows, _ = in_memory._training_windows(visits, holdout=False)
    from trajmoe.nn.data import CityBatchLoader, WindowDataset

    expected = [(X, y, type("Share", (), {"real": True})) for X, y in CityBatchLoader(WindowDataset(windows), 7)]
    streamed = written.windows("train")
    assert len(streamed) == len(windows) and written.windows("valid") is None
    assert len(streamed.groups) > 2                     # several row groups per city
    assert _window_rows(ParquetBatchLoader(streamed, 7, rank=0, world_size=1)) == _window_rows(expected)
    shuffled = list(ParquetBatchLoader(streamed, 7, shuffle=True, random_state=0, open_groups=2, rank=0,
                                       world_size=1))
    assert _window_rows(shuffled) == _window_rows(expected)
    assert all(len(set(X["city"].tolist())) == 1 for X, _, _ in shuffled)   # single-city batches
    assert len(ParquetBatchLoader(streamed, 7, shuffle=True)) == len(shuffled)


def test_ranks_share_the_same_streamed_batches(store):
    streamed = store[2].windows("train")
    whole = list(ParquetBatchLoader(streamed, 9, shuffle=True, random_state=4, rank=0, world_size=1))
    ranks = [list(ParquetBatchLoader(streamed, 9, shuffle=True, random_state=4, rank=r, world_size=2))
             for r in range(2)]
    for batch, *parts in zip(whole, *ranks, strict=True):
        assert all(part[2].n_windows == batch[2].n_windows for part in parts)
        assert _window_rows([part for part in parts if part[2].real]) == _window_rows([batch])
    resumed = ParquetBatchLoader(streamed, 9, shuffle=True, random_state=4, skip_epochs=1, rank=0, world_size=1)
    loader = ParquetBatchLoader(streamed, 9, shuffle=True, random_state=4, rank=0, world_size=1)
    list(loader)
    assert _window_rows(resumed) == _window_rows(loader)


def test_a_model_trains_on_streamed_windows(store, tmp_path):
    visits, _, written = store
    model = pretrain(TrajMoERegressor(**TINY, validation_fraction=0.0), written)
    history = model.history_
    assert len(history) == TINY["max_epochs"] and np.isfinite(history["train_loss"]).all()
    # the zones and forms of the store's frames, as fit records them (a store-trained model read
    # the same instants given in UTC as UTC times)
    fitted = TrajMoERegressor(**TINY, validation_fraction=0.0)
    fitted._record_times(visits)
    assert model.time_zones_ == fitted.time_zones_ == {"nyc": "America/New_York"}
    assert model.time_forms_ == fitted.time_forms_ and set(model.time_forms_) == {"nyc", "yjmob_A"}
    assert model.predict(visits.iloc[:50]).shape == (50,)
    with pytest.raises(ValueError, match="other parameters"):
        pretrain(TrajMoERegressor(**TINY, validation_fraction=0.0, window_days=2), written)


def test_a_model_pretrained_on_a_store_fine_tunes_in_memory(store, tmp_path):
    """partial_fit after a store pre-training reads the frame's windows (it used to ask the
    in-memory windows for the store's row groups): the batches of the same model saved and loaded,
    their losses equal but for the dropout masks (a data-parallel net draws them in another order)."""
    import torch

    from trajmoe import load_model, save_model

    visits, _, written = store
    model = pretrain(TrajMoERegressor(**TINY, validation_fraction=0.0), written)
    loaded = load_model(save_model(model, tmp_path / "model"))
    target = visits[visits["user_id"].isin(visits["user_id"].unique()[:5])]
    before = copy.deepcopy(model.net_.module_.state_dict())
    model.partial_fit(target)
    loaded.partial_fit(target)
    after = model.net_.module_.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after)
    batches = [model.net_.history[-1]["batches"], loaded.net_.history[-1]["batches"]]
    assert [b["train_batch_size"] for b in batches[0]] == [b["train_batch_size"] for b in batches[1]]
    np.testing.assert_allclose([b["train_loss"] for b in batches[0]], [b["train_loss"] for b in batches[1]],
                               rtol=0.01)
    assert len(model.predict(target)) == len(target)


def test_a_store_written_again_holds_only_its_own_windows(store, tmp_path):
    """Written again into the same folder with fewer cities: the earlier cities' files go (they
    were listed, and training read a city index the store no longer had)."""
    visits, _, _ = store
    two = [visits[visits["city"] == "nyc"], visits[visits["city"] != "nyc"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        write_windows(TrajMoERegressor(**TINY, validation_fraction=0.0), two, tmp_path)
        again = write_windows(TrajMoERegressor(**TINY, validation_fraction=0.0), two[:1], tmp_path)
    assert again.meta["files"]["train"] == ["city-0000.parquet"]
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["city-0000.parquet"]
    assert len(again.windows("train")) == sum(again.meta["windows"]["train"])
    with pytest.raises(ValueError, match=r"split must be 'train' or 'valid', got 'test'"):
        again.windows("test")


def test_write_windows_refuses_what_it_cannot_do_and_leaves_the_model_as_it_was(store, tmp_path):
    visits, _, _ = store
    model = TrajMoERegressor(**TINY, validation_fraction=0.0)
    with pytest.raises(TypeError, match="chunks is an iterator.*pass a list"):
        write_windows(model, (c for c in by_users(visits, 2)), tmp_path)      # read twice: empty the second time
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=rf"rows_per_group must be an int >= 1.*got {bad!r}"):
            write_windows(model, by_users(visits, 2), tmp_path, rows_per_group=bad)
    lonely = visits.iloc[:3].assign(user_id=-1)                           # a chunk with no training window
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(ValueError, match="No training window"):
            write_windows(model, [lonely, lonely.assign(user_id=-2)], tmp_path)
        assert not hasattr(model, "encoder_") and not hasattr(model, "cities_")
        # with other chunks, it adds no window (its user adds none to one fit), as fit accepts it
        written = write_windows(clone(model), [visits, lonely], tmp_path / "with")
        alone = write_windows(clone(model), [visits], tmp_path / "without")
    assert written.meta["windows"] == alone.meta["windows"]
    # a fitted model would keep its network beside a new encoder: refused before any work
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        fitted = TrajMoERegressor(**TINY, validation_fraction=0.0).fit(visits[visits["city"] == "nyc"])
    encoder = fitted.encoder_
    with pytest.raises(ValueError, match=r"fitted TrajMoERegressor .*\['nyc'\].*sklearn.base.clone"):
        write_windows(fitted, by_users(visits, 2), tmp_path)
    assert fitted.encoder_ is encoder and fitted.cities_ == ["nyc"]


def test_a_changed_store_and_a_foreign_model_are_clear_errors(store, tmp_path):
    """A store.json without a key was a KeyError; check_model(object()) an AttributeError."""
    import json
    import shutil

    from trajmoe.streaming import WindowStore

    copy = tmp_path / "store"
    shutil.copytree(store[2].path, copy)
    meta = json.loads((copy / "store.json").read_text())
    del meta["windows"]
    (copy / "store.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"store\.json lacks \['windows'\]"):
        WindowStore(copy)
    (copy / "store.json").write_text("{")
    with pytest.raises(ValueError, match=r"store\.json is not JSON"):
        WindowStore(copy)
    with pytest.raises(TypeError, match=r"object has no window parameters"):
        store[2].check_model(object())


def test_a_failed_rewrite_leaves_the_earlier_store_and_numpy_seeds_are_data(tmp_path):
    """The store is written beside the folder and swapped in at the end: a rewrite that fails
    (chunks without a window) leaves the earlier store whole; an np.int64 seed is recorded as
    the number it is."""
    visits = load_foursquare_nyc().visits
    users = visits["user_id"].unique()
    first, second = visits[visits.user_id.isin(users[:12])], visits[visits.user_id.isin(users[12:24])]
    model = lambda seed: TrajMoERegressor(d_model=16, n_layers=1, n_heads=2, max_epochs=1, device="cpu",  # noqa: E731
                                          random_state=seed)
    store = write_windows(model(0), [first, second], tmp_path / "s")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="training window"):
        write_windows(model(0), [first.iloc[:2], second.iloc[:2]], tmp_path / "s")
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["s"]     # no draft left
    again = write_windows(model(np.int64(1)), [first, second], tmp_path / "s")
    assert again.meta["params"]["random_state"] == 1 and again.meta["windows"] != store.meta["windows"]
    again.check_model(model(np.int64(1)))
    with pytest.raises(ValueError, match="no visit frame"):
        write_windows(model(0), [], tmp_path / "empty")
    with pytest.raises(ValueError, match=r"chunk 2 of chunks: X is empty"):
        write_windows(model(0), [first, first.iloc[:0]], tmp_path / "empty")
    with pytest.raises(NotADirectoryError, match="is a file"):
        write_windows(model(0), [first], tmp_path / "s" / "store.json")
