"""Safe save/load of fitted neural estimators: data files only, identical predictions."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

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


def test_saved_files_hold_data_only(fitted_and_test, tmp_path):
    model, _ = fitted_and_test
    folder = save_model(model, tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "tables.npz", "weights.pt"]
    config = json.loads((folder / "config.json").read_text())
    assert config["cities"][0]["name"] == "yjmob_A" and config["cities"][0]["crs"] is None
    with zipfile.ZipFile(folder / "tables.npz") as z:        # plain arrays, no pickled objects
        assert all(name.endswith(".npy") for name in z.namelist())
    torch.load(folder / "weights.pt", weights_only=True)     # raises if anything but tensors


def test_a_loaded_model_keeps_learning(fitted_and_test, tmp_path):
    model, test = fitted_and_test
    loaded = load_model(save_model(model, tmp_path / "m"))
    loaded.partial_fit(test)
    assert len(loaded.net_.history) == 1


def test_save_refuses_unfitted_and_other_estimators(tmp_path):
    from sklearn.exceptions import NotFittedError

    from trajmoe import PopularityBaseline

    with pytest.raises(NotFittedError):
        save_model(TrajMoERegressor(), tmp_path)
    with pytest.raises(TypeError, match="TrajMoERegressor"):
        save_model(PopularityBaseline(), tmp_path)


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
