"""Safe save/load of fitted neural estimators: data files only, identical predictions; a model
saved for a GPU loads on a CPU, another version warns, the history travels."""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

import trajmoe
from trajmoe import LSTMRegressor, TrajMoERegressor, TransformerRegressor, load_model, save_model
from trajmoe.datasets import load_yjmob100k


@pytest.fixture(scope="module")
def fitted_and_test():
    visits = load_yjmob100k("A").visits
    users = visits["user_id"].unique()
    train = visits[visits["user_id"].isin(users[:30])]
    test = visits[visits["user_id"].isin(users[30:36])]
    model = TrajMoERegressor(d_model=16, n_layers=1, n_heads=2, max_epochs=1, random_state=0, device="cpu")
    return model.fit(train), test


def test_loaded_model_predicts_exactly_as_the_saved_one(fitted_and_test, tmp_path):
    model, test = fitted_and_test
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    labels, scores = model.predict_topk(test, k=5)
    labels2, scores2 = loaded.predict_topk(test, k=5)
    assert (labels == labels2).all()
    np.testing.assert_array_equal(scores, scores2)
    assert loaded.get_params()["d_model"] == 16 and loaded.cities_ == model.cities_
    pd_table = loaded.encoder_.location_table("yjmob_A")
    assert pd_table.equals(model.encoder_.location_table("yjmob_A"))


def test_learned_weight_is_a_scoring_parameter_and_old_models_load_with_one(fitted_and_test, tmp_path):
    model, test = fitted_and_test
    model = load_model(save_model(model, tmp_path / "m"))          # a copy: the fixture stays as it is
    assert model.learned_weight == 0.5
    pooled = model.target_ranks(test)
    model.set_params(learned_weight=1.0)                            # takes effect without refitting
    trained = model.target_ranks(test)
    assert not np.array_equal(pooled, trained)
    # a model saved before the parameter existed scored with the network as trained
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["estimator"]["learned_weight"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    old = load_model(tmp_path / "m")
    assert old.learned_weight == 1.0
    np.testing.assert_array_equal(old.target_ranks(test), trained)
    # checked when the model scores, as fit checks it: set_params after fit and a loaded file
    for bad in (float("nan"), 1.5, -0.1, "0.5", None):
        model.set_params(learned_weight=bad)
        with pytest.raises(ValueError, match="learned_weight"):
            model.predict(test)


def test_history_moves_travel_and_old_models_load_without_them(fitted_and_test, tmp_path):
    model, test = fitted_and_test                     # the default: the history prior with moves
    loaded = load_model(save_model(model, tmp_path / "moves"))
    assert loaded.history_moves and loaded.net_.module_.history_bias.shape == (3,)
    np.testing.assert_array_equal(loaded.target_ranks(test), model.target_ranks(test))
    # a model saved before the parameter existed had no moves; it loads so and keeps fine-tuning
    # (its architecture is the same as before)
    old = TrajMoERegressor(d_model=16, n_layers=1, n_heads=2, max_epochs=1, random_state=0, device="cpu",
                           history_moves=False).fit(test)
    folder = save_model(old, tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    del config["estimator"]["history_moves"]
    (folder / "config.json").write_text(json.dumps(config))
    back = load_model(folder)
    assert back.history_moves is False and back.net_.module_.history_bias.shape == (2,)
    np.testing.assert_array_equal(back.target_ranks(test), old.target_ranks(test))
    back.partial_fit(test)


def test_the_return_scorer_travels_and_trains(fitted_and_test, tmp_path):
    _, test = fitted_and_test
    model = TrajMoERegressor(d_model=16, n_layers=1, n_heads=2, max_epochs=2, random_state=0, device="cpu",
                             return_scorer=True).fit(test)
    scorer = model.net_.module_.return_scorer
    assert scorer.out.weight.abs().sum() > 0             # trained away from its zero start
    loaded = load_model(save_model(model, tmp_path / "returns"))
    assert loaded.return_scorer and loaded.net_.module_.return_scorer is not None
    np.testing.assert_array_equal(loaded.target_ranks(test), model.target_ranks(test))
    folder = save_model(TrajMoERegressor(d_model=16, n_layers=1, n_heads=2, max_epochs=1, random_state=0,
                                         device="cpu", return_scorer=False).fit(test), tmp_path / "before")
    config = json.loads((folder / "config.json").read_text())
    del config["estimator"]["return_scorer"]              # saved before the parameter existed
    (folder / "config.json").write_text(json.dumps(config))
    assert load_model(folder).return_scorer is False
    # "finetune": fit keeps it at its zero start (and skips it), partial_fit trains it
    model = TrajMoERegressor(d_model=16, n_layers=1, n_heads=2, max_epochs=1, random_state=0, device="cpu",
                             return_scorer="finetune").fit(test)
    scorer = model.net_.module_.return_scorer
    assert not (scorer.out.weight.any() or scorer.out.bias.any())
    assert all(p.requires_grad for p in scorer.parameters())      # trainable again after fit
    model.partial_fit(test)
    assert scorer.out.weight.abs().sum() > 0


def test_saved_files_hold_data_only(fitted_and_test, tmp_path):
    model, _ = fitted_and_test
    folder = save_model(model, tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "history.json", "optimizer.pt", "tables.npz",
                                                        "weights.pt"]
    assert isinstance(json.loads((folder / "history.json").read_text()), list)
    config = json.loads((folder / "config.json").read_text())
    assert config["cities"][0]["name"] == "yjmob_A" and config["cities"][0]["crs"] is None
    with zipfile.ZipFile(folder / "tables.npz") as z:        # plain arrays, no pickled objects
        assert all(name.endswith(".npy") for name in z.namelist())
    torch.load(folder / "weights.pt", weights_only=True)     # raises if anything but tensors
    torch.load(folder / "optimizer.pt", weights_only=True)


def test_a_loaded_model_keeps_learning(fitted_and_test, tmp_path):
    model, test = fitted_and_test
    loaded = load_model(save_model(model, tmp_path / "m"))
    loaded.partial_fit(test)
    assert len(loaded.net_.history) == len(model.net_.history) + 1     # the history travels too


@pytest.mark.parametrize("new_city", [False, True], ids=["known city", "new city"])
def test_a_loaded_model_fine_tunes_as_the_saved_one_would(fitted_and_test, tmp_path, new_city):
    """Pre-train, save, load, fine-tune: the same weights as fine-tuning the model itself (the
    optimizer's moments, the rate fit ran with, the cities' learned tables and the training users
    travel with the folder)."""
    import copy

    from trajmoe.datasets import load_foursquare_nyc
    from trajmoe.exceptions import SharedUsersWarning

    model, test = fitted_and_test
    if new_city:
        visits = load_foursquare_nyc().visits
        test = visits[visits["user_id"].isin(visits["user_id"].unique()[:8])]
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.get_params()["encoder"] is None and loaded.get_params().keys() == model.get_params().keys()
    assert len(loaded.net_.optimizer_.state_dict()["state"]) == len(model.net_.optimizer_.state_dict()["state"]) > 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # with more threads two copies of one model fine-tune ~1e-7 apart
    try:
        itself = copy.deepcopy(model).partial_fit(test)
        loaded.partial_fit(test)
    finally:
        torch.set_num_threads(threads)
    for name, weight in itself.net_.module_.state_dict().items():
        torch.testing.assert_close(loaded.net_.module_.state_dict()[name], weight, rtol=0, atol=0, msg=name)
    for fine_tuned in (itself, loaded):         # scored on the users it was fine-tuned on: warned
        with pytest.warns(SharedUsersWarning):
            fine_tuned.target_ranks(test)
    np.testing.assert_array_equal(loaded.target_ranks(test), itself.target_ranks(test))


@pytest.mark.parametrize("venue_dtype", [None, object])
def test_a_loaded_check_in_model_grows_its_venues_as_the_saved_one(tmp_path, venue_dtype):
    """A check-in city's POI counts come from its visited venues; fine-tuning on more of its users
    adds theirs. The venue list travels with the folder, so the loaded model grows the same
    vocabulary and weights (it kept the counts as they were, 114 fewer cells on 10 NYC users).
    Integer venue ids of an object column stay integers (saved as text, the known venues of the
    next frame were counted again: 314 venues instead of 306)."""
    import copy

    from trajmoe.datasets import load_foursquare_nyc

    visits = load_foursquare_nyc().visits
    if venue_dtype is not None:
        visits = visits.assign(venue_id=visits["venue_id"].astype(venue_dtype))
    users = visits["user_id"].unique()
    model = TrajMoERegressor(d_model=16, n_layers=1, n_heads=2, max_epochs=1, random_state=0, device="cpu")
    model.fit(visits[visits["user_id"].isin(users[:20])])
    more = visits[visits["user_id"].isin(users[20:30])]
    loaded = load_model(save_model(model, tmp_path / "m"))
    pd.testing.assert_frame_equal(loaded.encoder_.cities_["nyc"].venues, model.encoder_.cities_["nyc"].venues,
                                  check_dtype=venue_dtype is None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        itself = copy.deepcopy(model).partial_fit(more)
        loaded.partial_fit(more)
    finally:
        torch.set_num_threads(threads)
    grown = itself.encoder_.cities_["nyc"]
    assert len(grown.cells) > len(model.encoder_.cities_["nyc"].cells)
    assert len(loaded.encoder_.cities_["nyc"].venues) == len(grown.venues)
    np.testing.assert_array_equal(loaded.encoder_.cities_["nyc"].poi_counts, grown.poi_counts)
    for name, weight in itself.net_.module_.state_dict().items():
        torch.testing.assert_close(loaded.net_.module_.state_dict()[name], weight, rtol=0, atol=0, msg=name)


def test_save_refuses_unfitted_and_other_estimators(tmp_path):
    from sklearn.exceptions import NotFittedError

    from trajmoe import PopularityBaseline

    with pytest.raises(NotFittedError):
        save_model(TrajMoERegressor(), tmp_path)
    with pytest.raises(TypeError, match="TrajMoERegressor"):
        save_model(PopularityBaseline(), tmp_path)


def test_a_routed_tuple_comes_back_a_tuple(fitted_and_test, tmp_path):
    """JSON has lists only: optimizer__betas=(0.9, 0.99) came back a list, and setting the tuple
    again then made partial_fit refuse a changed optimizer."""
    _, test = fitted_and_test
    model = TrajMoERegressor(d_model=16, n_layers=1, n_heads=2, max_epochs=1, random_state=0, device="cpu",
                             optimizer__betas=(0.9, 0.99)).fit(test)
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.get_params()["optimizer__betas"] == (0.9, 0.99)
    loaded.set_params(optimizer__betas=(0.9, 0.99)).partial_fit(test)       # the same optimizer


def test_a_failed_save_leaves_the_earlier_folder_as_it_was(fitted_and_test, tmp_path, monkeypatch):
    """The files are written beside the folder and moved in once all are written: a save that
    fails midway (a full disk) over an earlier one leaves that one, not a mix of both."""
    import copy

    model, test = fitted_and_test
    folder = save_model(model, tmp_path / "m")
    ranks = model.target_ranks(test)
    newer = copy.deepcopy(model).partial_fit(test)              # new visit counts, weights, history

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_model(newer, folder)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]          # no draft left behind
    np.testing.assert_array_equal(load_model(folder).target_ranks(test), ranks)
    np.testing.assert_array_equal(load_model(save_model(newer, folder)).target_ranks(test), newer.target_ranks(test))


@pytest.mark.parametrize("changed", [dict(d_model=32), dict(time_weight=0.0), dict(weight_decay=0.5)])
def test_save_refuses_parameters_the_network_was_not_fitted_with(fitted_and_test, tmp_path, changed):
    """set_params after fit of what fit fixes: the folder would hold other parameters than the
    weights' (a d_model that does not load; a loss partial_fit refuses and the loaded copy took)."""
    import copy

    model = copy.deepcopy(fitted_and_test[0]).set_params(**changed)
    name = next(iter(changed))
    with pytest.raises(ValueError, match=rf"set_params changed what fit fixed \({name}: .*save_model"):
        save_model(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    model.set_params(**{name: fitted_and_test[0].get_params()[name]})
    assert load_model(save_model(model, tmp_path / "m")).get_params()[name] == fitted_and_test[0].get_params()[name]


@pytest.mark.parametrize("cls", [LSTMRegressor, TransformerRegressor])
def test_neural_baselines_round_trip_as_their_own_class(cls, fitted_and_test, tmp_path):
    _, test = fitted_and_test
    model = cls(d_model=16, n_layers=1, max_epochs=1, random_state=0, device="cpu").fit(test)
    loaded = load_model(save_model(model, tmp_path / "m"))
    params = {k: v for k, v in model.get_params(deep=False).items() if k != "encoder"}
    assert type(loaded) is cls and params.items() <= loaded.get_params(deep=False).items()
    np.testing.assert_array_equal(model.predict_topk(test, k=3)[1], loaded.predict_topk(test, k=3)[1])


def test_a_swapped_or_edited_folder_is_a_clear_error(fitted_and_test, tmp_path):
    model, test = fitted_and_test
    folder = save_model(model, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["class"] = "LSTMRegressor"                   # TrajMoE weights under another class
    config["estimator"] = {k: v for k, v in config["estimator"].items() if k in LSTMRegressor().get_params()}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="weights.pt does not match"):
        load_model(folder)
    config["estimator"]["no_such_parameter"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no_such_parameter"):
        load_model(folder)


def _edited(folder, tmp_path, name, edit):
    """A copy of ``folder`` with ``edit`` applied to one of its files (config.json as a dict,
    tables.npz as a dict of arrays, other files as bytes)."""
    import shutil

    copy = tmp_path / f"edited-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(folder, copy)
    target = copy / name
    if name == "config.json":
        config = json.loads(target.read_text())
        edit(config)
        target.write_text(json.dumps(config))
    elif name == "tables.npz":
        with np.load(target) as tables:
            arrays = dict(tables)
        edit(arrays)
        np.savez(target, **arrays)
    else:
        target.write_bytes(edit(target.read_bytes()))
    return copy


@pytest.mark.parametrize("name, edit, match", [
    ("config.json", lambda c: c.pop("taxonomy"), r"not a folder written by save_model.*KeyError: 'taxonomy'"),
    ("config.json", lambda c: c["cities"][0].update(cell_size=-500), r"cell_size of config.json is -500"),
    ("config.json", lambda c: c["cities"][0].update(cell_size="500"), r"cell_size of config.json is '500'"),
    ("config.json", lambda c: c["estimator"].update(d_model="16"), r"config.json does not hold .*'d_model' parameter"),
    ("tables.npz", lambda a: a.update({"0/cells": a["0/cells"][:-10]}), r"poi_counts is shape"),
    ("tables.npz", lambda a: a.update({"0/poi_counts": a["0/poi_counts"][:, :33]}), r"poi_counts is shape .*33"),
    ("tables.npz", lambda a: a.update({"0/coord_std": np.zeros(2)}), r"coord_std is not 2 finite numbers > 0"),
    ("tables.npz", lambda a: a.pop("0/visit_counts"), r"not a folder written by save_model.*visit_counts"),
    ("weights.pt", lambda b: b[: len(b) // 2], r"weights.pt is damaged or was not written by save_model"),
    ("weights.pt", lambda b: b"garbage" * 100, r"weights.pt is damaged .*never pickled objects\)\. Save"),
    ("optimizer.pt", lambda b: b"", r"optimizer.pt is damaged or was not written by save_model \(EOFError\)"),
    ("config.json", lambda c: c["cities"][0].update(centre="ab"), r"a file of the folder holds a value load_model "
                                                                    r"cannot use .*Save the model again"),
    ("config.json", lambda c: None, None),             # unchanged: loads
])
def test_a_changed_folder_is_an_error_naming_the_file(fitted_and_test, tmp_path, name, edit, match):
    """Changed or truncated files used to load and fail later (or predict other labels), or fail deep
    inside json, numpy, pyproj or torch."""
    model, _ = fitted_and_test
    folder = save_model(model, tmp_path / "m")
    edited = _edited(folder, tmp_path, name, edit)
    if match is None:
        load_model(edited)
        return
    with pytest.raises(ValueError, match=match):
        load_model(edited)


def test_a_truncated_config_nan_weights_and_a_file_path_are_clear_errors(fitted_and_test, tmp_path):
    model, _ = fitted_and_test
    folder = save_model(model, tmp_path / "m")
    cut = _edited(folder, tmp_path, "history.json", lambda b: b[: len(b) // 2])
    with pytest.raises(ValueError, match=r"history.json is damaged .*\(JSONDecodeError\)"):
        load_model(cut)
    (folder / "config.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ValueError, match=r"config.json is damaged .*\(UnicodeDecodeError\)"):
        load_model(folder)
    folder = save_model(model, tmp_path / "m")
    state = torch.load(folder / "weights.pt", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    torch.save(state, folder / "weights.pt")
    with pytest.raises(ValueError, match=rf"weights.pt holds NaN or infinite values in \['{re.escape(name)}'\]"):
        load_model(folder)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match="save_model writes a folder of files.*is a file"):
        save_model(model, tmp_path / "a_file")


def test_grid_centre_and_excluded_counts_round_trip(tmp_path):
    """A lat/lon city's robust centre and the counts of rows its fitting left out are saved: after
    loading, partial_fit still leaves out a visit 1,000 km from the city (as the saved model does)
    and n_excluded_ goes on from the saved counts."""
    import pandas as pd

    from trajmoe import SpatialSemanticEncoder
    from trajmoe.datasets import load_foursquare_nyc
    from trajmoe.exceptions import DataWarning

    visits = load_foursquare_nyc().visits
    users = visits["user_id"].unique()
    train = visits[visits["user_id"].isin(users[:8])]
    train = pd.concat([train, train.iloc[:2], train.iloc[:1].assign(lat=0.0, lon=0.0)], ignore_index=True)
    model = TrajMoERegressor(encoder=SpatialSemanticEncoder(region_margin=None), d_model=16, n_layers=1, n_heads=2,
                             max_epochs=1, min_stays=2, random_state=0, device="cpu")
    with pytest.warns(DataWarning):
        model.fit(train)
    city = model.cities_[0]
    table = model.encoder_.cities_[city]
    assert table.grid.centre is not None
    assert model.encoder_.n_excluded_[city] == {"duplicate_visits": 2, "outlier_visits": 1, "outlier_pois": 0}
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.encoder_.cities_[city].grid == table.grid
    assert loaded.encoder_.cities_[city].excluded == table.excluded
    test = visits[visits["user_id"].isin(users[8:11])]
    np.testing.assert_array_equal(model.predict_topk(test, k=3)[1], loaded.predict_topk(test, k=3)[1])
    far = pd.concat([test, test.iloc[:1].assign(lat=test["lat"].iloc[0] + 9.0)], ignore_index=True)
    for m in (model, loaded):
        with pytest.warns(DataWarning, match="farther than"):
            m.partial_fit(far)
    assert loaded.encoder_.n_excluded_ == model.encoder_.n_excluded_
    assert loaded.encoder_.n_excluded_[city]["outlier_visits"] == 2
    # the same cells and counts (the weights differ: the optimizer state is not saved)
    np.testing.assert_array_equal(loaded.encoder_.cities_[city].cells, model.encoder_.cities_[city].cells)
    np.testing.assert_array_equal(loaded.encoder_.cities_[city].visit_counts, model.encoder_.cities_[city].visit_counts)


def test_a_model_saved_for_a_gpu_loads_on_a_machine_without_one(fitted_and_test, tmp_path, monkeypatch):
    from trajmoe.exceptions import ModelVersionWarning

    model, test = fitted_and_test
    folder = save_model(model, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["estimator"]["device"] = "cuda"                    # as written on a GPU machine
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match=r"saved with device='cuda'.*loaded onto the CPU"):
        loaded = load_model(folder)
    assert loaded.device == "cpu" and loaded.net_.device == "cpu"
    np.testing.assert_array_equal(loaded.predict_topk(test, k=3)[1], model.predict_topk(test, k=3)[1])
    with pytest.raises(ValueError, match="torch has no CUDA device here"):
        load_model(folder, device="cuda")
    # another version warns, and the history travels with the weights
    config["trajmoe_version"] = "0.0.1"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.warns(ModelVersionWarning, match=r"saved by trajmoe 0\.0\.1"):
        loaded = load_model(folder, device="cpu")
    pd.testing.assert_frame_equal(loaded.history_.drop(columns="dur"), model.history_.drop(columns="dur"))


def test_a_pickle_of_another_version_warns(fitted_and_test):
    import pickle

    from trajmoe.exceptions import ModelVersionWarning

    model, test = fitted_and_test
    state = model.__getstate__()
    assert state["_trajmoe_version"] == trajmoe.__version__
    copy = pickle.loads(pickle.dumps(model))
    assert (copy.predict(test) == model.predict(test)).all()
    clone_ = TrajMoERegressor.__new__(TrajMoERegressor)
    with pytest.warns(ModelVersionWarning, match=r"saved by trajmoe 0\.0\.1"):
        clone_.__setstate__({**state, "_trajmoe_version": "0.0.1"})


def test_a_pickle_without_newer_parameters_takes_their_defaults(fitted_and_test):
    from trajmoe.exceptions import ModelVersionWarning

    model, test = fitted_and_test
    state = model.__getstate__()
    old = {k: v for k, v in state.items() if k != "finetune_batch_size"}
    clone_ = TrajMoERegressor.__new__(TrajMoERegressor)
    with pytest.warns(ModelVersionWarning):
        clone_.__setstate__({**old, "_trajmoe_version": "0.0.1"})
    assert clone_.finetune_batch_size == 8
    assert (clone_.predict(test) == model.predict(test)).all()


def test_popularity_rank_round_trips_to_the_city_tables(tmp_path):
    """A model whose encoder ranks popularity among the visited cells loads back ranking the same
    way: same location table, and the same zero-shot bins for a city it never saw."""
    from trajmoe import SpatialSemanticEncoder

    grid = [(x, y) for x in range(6) for y in range(4)]
    rows = [{"user_id": u, "day": d, "slot": 2 * i, "x": grid[(u * 5 + d + i) % 24][0],
             "y": grid[(u * 5 + d + i) % 24][1]} for u in range(6) for d in range(4) for i in range(6)]
    a = pd.DataFrame(rows).assign(city="a")
    model = TrajMoERegressor(encoder=SpatialSemanticEncoder(popularity_rank="visited"), d_model=16, n_layers=1,
                             n_heads=2, max_epochs=1, random_state=0, device="cpu").fit(a)
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.encoder_.cities_["a"].popularity_rank == "visited"
    assert loaded.encoder_.location_table("a").equals(model.encoder_.location_table("a"))
    # never-visited cells of the region are in the last bin, on both
    assert (loaded.encoder_.location_table("a").query("n_visits == 0")["popularity"] == 8).all()
    b = a.assign(city="b", x=a["x"] + 100)
    with pytest.warns(trajmoe.DataWarning, match="zero-shot"):
        bins = [m.encoder_.with_unseen_cities(b).cities_["b"].zero_shot_bin for m in (model, loaded)]
    assert bins == [8, 8]
    with pytest.warns(trajmoe.DataWarning, match="zero-shot"):
        scores, scores2 = (m.predict_topk(b, k=3, zero_shot=True)[1] for m in (model, loaded))
    np.testing.assert_array_equal(scores, scores2)


def test_numpy_scalar_and_unknown_parameters_save_as_data(fitted_and_test, tmp_path):
    """A grid built with NumPy (np.float32 learned_weight, np.int64 sizes) saves its values, not
    the defaults; a name set_params took with a warning is not saved, and the file loads."""
    _, test = fitted_and_test
    model = TrajMoERegressor(d_model=np.int64(16), n_layers=1, n_heads=2, max_epochs=1, random_state=0,
                             device="cpu", learned_weight=np.float32(0.25)).fit(test)
    model.encoder_.set_params(cell_size=np.int64(500))
    with pytest.warns(UserWarning, match=r"no parameter \['foo'\]"):
        model.set_params(foo=3)
    with pytest.warns(UserWarning, match=r"\['foo'\] is not a parameter of TrajMoERegressor"):
        folder = save_model(model, tmp_path / "m")
    loaded = load_model(folder)
    assert loaded.learned_weight == 0.25 and loaded.d_model == 16 and "foo" not in loaded.get_params()
    np.testing.assert_array_equal(loaded.target_ranks(test), model.target_ranks(test))


def test_the_zone_fit_read_times_in_travels(fitted_and_test, tmp_path):
    """A model fitted on Tokyo times reads a frame of the same instants in UTC as Tokyo times,
    also after save and load (``time_zones_``)."""
    _, test = fitted_and_test

    def zoned(frame, tz):
        start = pd.Timestamp("2024-01-01", tz="Asia/Tokyo") + pd.to_timedelta(frame["day"] * 1440 + frame["slot"] * 30,
                                                                               unit="min")
        return frame.drop(columns=["day", "slot"]).assign(started_at=start.dt.tz_convert(tz))

    tokyo = zoned(test, "Asia/Tokyo")
    model = TrajMoERegressor(d_model=16, n_layers=1, n_heads=2, max_epochs=1, random_state=0, device="cpu",
                             min_stays=3).fit(tokyo)
    assert model.time_zones_ == {"yjmob_A": "Asia/Tokyo"}
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.time_zones_ == model.time_zones_ and loaded.time_forms_ == {"yjmob_A": "started_at"}
    np.testing.assert_array_equal(loaded.predict(zoned(test, "UTC")), model.predict(tokyo))
