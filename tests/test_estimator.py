"""Tests of TrajMoERegressor (and the scikit-learn API of every estimator) on slices of real data.

Kept fast: a tiny network (d_model 16, 1 layer), at most 2 epochs, a few dozen users, and one
torch thread (small tensors: on a busy 2-CPU machine OpenMP threads waiting for each other made a
fit 10x slower).

scikit-learn's ``check_estimator`` / ``parametrize_with_checks`` (legacy=False): our estimators
declare ``two_d_array=False`` (rows are visits of a DataFrame, not samples of an array), so sklearn
only runs ``check_estimator_cloneable`` and skips the rest. The checks that need no data are called
one by one below (``API_CHECKS``). These do NOT apply, because each feeds numpy arrays of samples
(rows are visits here: a frame needs user_id, a time form and a location form, and the targets
are the next visits, not ``y``):
check_fit_score_takes_y, check_estimators_overwrite_params, check_dont_overwrite_parameters,
check_estimators_fit_returns_self, check_readonly_memmap_input, check_estimators_unfitted,
check_n_features_in_after_fitting (the columns of a visit frame vary), check_positive_only_tag_during_fit.
Their rules are tested on visit frames instead: fit/score take ``y=None``, fit returns self, fit
neither changes the parameters nor adds public attributes without a trailing underscore, every
public method raises NotFittedError before fit.
"""

from __future__ import annotations

import inspect
import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import skorch
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks as ec

from trajmoe import (HistoryFrequencyBaseline, LSTMRegressor, MarkovBaseline, PopularityBaseline,
                     SpatialSemanticEncoder, TrajMoERegressor, TransformerRegressor)
from trajmoe.datasets import load_foursquare_nyc, load_yjmob100k
from trajmoe.exceptions import DataWarning
from trajmoe.metrics import accuracy_at_k

TINY = dict(d_model=16, n_layers=1, n_heads=2, max_epochs=2, device="cpu", random_state=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def users_slice(visits, start, stop):
    users = visits["user_id"].unique()
    return visits[visits["user_id"].isin(users[start:stop])]


@pytest.fixture(scope="module")
def yjmob(data_home):
    """40 users of YJMob100K city A and the POIs of the cells they visit (all of city A's 20,000
    POI cells would make every step rank 20,000 candidates: too slow for a unit test)."""
    bunch = load_yjmob100k("A")
    visits = users_slice(bunch.visits, 0, 40)
    visited = pd.MultiIndex.from_frame(visits[["x", "y"]])
    pois = bunch.pois[pd.MultiIndex.from_frame(bunch.pois[["x", "y"]]).isin(visited)]
    assert len(pois) > 1000 and set(pois["city"]) == {"yjmob_A"}
    return visits, pois


@pytest.fixture(scope="module")
def nyc(data_home):
    bunch = load_foursquare_nyc()
    return users_slice(bunch.visits, 0, 10), users_slice(bunch.visits, 10, 16), bunch.pois


@pytest.fixture(scope="module")
def two_city(yjmob, nyc):
    """Pre-trained on YJMob city A, fine-tuned on 10 NYC users (a new city)."""
    a_visits, a_pois = yjmob
    nyc_train, _, nyc_pois = nyc
    model = TrajMoERegressor(**TINY).fit(a_visits, pois=a_pois)
    epochs_fit = len(model.net_.history)
    cities_fit = list(model.cities_)
    model.partial_fit(nyc_train, pois=nyc_pois)
    return model, epochs_fit, cities_fit


@pytest.fixture(scope="module")
def nyc_model(nyc):
    nyc_train, _, _ = nyc
    return TrajMoERegressor(**{**TINY, "max_epochs": 1}).fit(nyc_train)


# --------------------------------------------------------------------------------------------------
# fit -> partial_fit -> predict across two real cities
# --------------------------------------------------------------------------------------------------
def test_partial_fit_registers_new_city(two_city):
    model, epochs_fit, cities_fit = two_city
    assert cities_fit == ["yjmob_A"]
    assert model.cities_ == ["yjmob_A", "nyc"]
    assert list(model.encoder_.cities_) == ["yjmob_A", "nyc"]
    module = model.net_.module_
    for i, city in enumerate(model.cities_):
        assert module.n_locations(i) == model.encoder_.cities_[city].n_locations
    # fit ran its epochs (<= max_epochs), partial_fit exactly finetune_epochs = 1 more
    assert 1 <= epochs_fit <= TINY["max_epochs"]
    assert len(model.net_.history) == epochs_fit + 1
    # the template encoder parameter is left untouched (cloned in fit)
    assert model.encoder is None


def test_predict_labels_of_the_right_city_in_x_order(two_city, nyc):
    model, _, _ = two_city
    _, test, _ = nyc
    pred = model.predict(test)
    assert pred.shape == (len(test),) and pred.dtype == object
    assert all(p.startswith("nyc:") for p in pred)
    assert set(pred) <= set(model.encoder_.location_table("nyc")["label"])
    # shuffled rows, repeated index labels: predictions follow X's rows
    perm = np.random.default_rng(0).permutation(len(test))
    shuffled = test.iloc[perm].copy()
    shuffled.index = np.arange(len(test)) % 7
    assert model.predict(shuffled).tolist() == pred[perm].tolist()
    # the YJMob city still predicts its own cells
    assert model.predict(users_slice(load_yjmob100k("A").visits, 40, 42))[0].startswith("yjmob_A:")


def test_predict_topk(two_city, nyc):
    model, _, _ = two_city
    _, test, _ = nyc
    labels, scores = model.predict_topk(test, k=5)
    assert labels.shape == scores.shape == (len(test), 5)
    assert labels[:, 0].tolist() == model.predict(test).tolist()
    assert np.all(np.isfinite(scores))
    assert np.all(np.diff(scores, axis=1) <= 0)                  # best first
    assert np.all(scores <= 1e-6)                                # log-probabilities
    assert np.all(np.exp(scores).sum(axis=1) <= 1 + 1e-4)
    assert all(len(set(row)) == 5 for row in labels)             # five distinct cells


def test_target_ranks_agree_with_predict(two_city, nyc):
    model, _, _ = two_city
    _, test, _ = nyc
    ranks = model.target_ranks(test)
    assert ranks.dtype == np.int64 and len(ranks) > 0
    assert (ranks >= 1).all()
    assert ranks.index.is_unique and ranks.index.isin(test.index).all()
    last = model.target_ranks(test, protocol="last")
    assert last.index.isin(ranks.index).all() and len(last) < len(ranks)
    assert (last == ranks[last.index]).all()
    assert model.score(test) == pytest.approx(accuracy_at_k(ranks.to_numpy(), 1))
    # rank 1 <=> the prediction is the cell of the user's next visit (within the window)
    ordered = test.sort_values(["user_id", "started_at"], kind="stable")
    next_label = model.encoder_.locate(ordered)["label"].groupby(ordered["user_id"]).shift(-1)
    pred = pd.Series(model.predict(test), index=test.index)
    hit = pred[ranks.index] == next_label[ranks.index]
    assert ((ranks == 1) == hit).all()


def test_transform_query_vectors(two_city, nyc):
    model, _, _ = two_city
    _, test, _ = nyc
    Z = model.transform(test)
    assert Z.shape == (len(test), 16) and Z.dtype == np.float32
    assert np.all(np.isfinite(Z))
    perm = np.random.default_rng(1).permutation(len(test))
    np.testing.assert_allclose(model.transform(test.iloc[perm]), Z[perm], rtol=1e-5, atol=1e-6)
    emb = model.location_embeddings("nyc")
    assert emb.shape == (model.encoder_.cities_["nyc"].n_locations, 16)


def test_caller_frames_not_modified(yjmob, nyc):
    train, test, pois = nyc
    before = train.copy(), test.copy(), pois.copy()
    model = TrajMoERegressor(**{**TINY, "max_epochs": 1}).fit(train, pois=pois)
    model.partial_fit(test)
    model.predict(test)
    model.target_ranks(test)
    for frame, copy in zip((train, test, pois), before):
        pd.testing.assert_frame_equal(frame, copy)


# --------------------------------------------------------------------------------------------------
# training semantics
# --------------------------------------------------------------------------------------------------
def test_partial_fit_continues_from_current_weights(nyc):
    train, test, _ = nyc
    model = TrajMoERegressor(**{**TINY, "max_epochs": 1}).fit(train)
    before = model.predict_topk(test, k=3)
    weights = {k: v.clone() for k, v in model.net_.module_.state_dict().items()}
    # lr = 0: one more epoch on the same visits must leave weights and predictions as they are
    # (same cells; doubled visit counts keep the popularity ranks) - no silent re-initialisation
    assert model.final_lr_ == pytest.approx(TINY.get("lr", 1e-3))   # one epoch: no step decay yet
    model.set_params(finetune_lr=0.0).partial_fit(train)
    for k, v in model.net_.module_.state_dict().items():
        torch.testing.assert_close(v, weights[k], msg=k)
    after = model.predict_topk(test, k=3)
    assert after[0].tolist() == before[0].tolist()
    np.testing.assert_allclose(after[1], before[1], rtol=1e-5)
    # with a learning rate, partial_fit changes the weights
    model.set_params(finetune_lr=1e-2).partial_fit(train)
    assert model.net_.optimizer_.param_groups[0]["lr"] == 1e-2
    changed = [k for k, v in model.net_.module_.named_parameters() if not torch.equal(v, weights[k])]
    assert changed


def test_partial_fit_takes_batches_of_finetune_batch_size(nyc):
    train, _, _ = nyc
    model = TrajMoERegressor(**{**TINY, "max_epochs": 1, "batch_size": 64}).fit(train)
    n_windows = len(model._training_windows(model._visits_of(train), holdout=False)[0])
    for size, expected in ((8, -(-n_windows // 8)), (None, -(-n_windows // 64))):
        model.set_params(finetune_batch_size=size).partial_fit(train)
        assert len(model.net_.history[-1]["batches"]) == expected
        assert model.net_.batch_size == (size or 64)
    assert -(-n_windows // 8) > -(-n_windows // 64)              # the two sizes are told apart


def test_partial_fit_keeps_the_finetune_frozen_parts(nyc):
    """partial_fit after fit keeps the named parts fixed and trains every other weight; () trains
    all; every weight is trainable again afterwards; an unknown part is named in the error."""
    train, _, _ = nyc
    model = TrajMoERegressor(**{**TINY, "max_epochs": 1}).fit(train)
    for frozen in (("tower",), ("tower", "blocks"), ()):
        before = {k: v.detach().clone() for k, v in model.net_.module_.named_parameters()}
        model.set_params(finetune_frozen=frozen).partial_fit(train)
        moved = {k.split(".")[0] for k, v in model.net_.module_.named_parameters() if not torch.equal(v, before[k])}
        assert moved.isdisjoint(frozen) and {"query", "embed"} <= moved
        assert ("tower" in moved) == (frozen == ())
        assert all(p.requires_grad for p in model.net_.module_.parameters())
    weights = {k: v.detach().clone() for k, v in model.net_.module_.named_parameters()}
    with pytest.raises(ValueError, match=r"\['towr'\].*its parts are \[.*'tower'"):
        model.set_params(finetune_frozen=("towr",)).partial_fit(train)
    module = model.net_.module_
    everything = tuple(n for n, _ in module.named_children()) + tuple(n for n, _ in module.named_parameters(recurse=False))
    with pytest.raises(ValueError, match="finetune_frozen=.*every weight.*would train nothing"):
        model.set_params(finetune_frozen=everything).partial_fit(train)
    assert all(torch.equal(v, weights[k]) for k, v in model.net_.module_.named_parameters())
    # a partial_fit that creates the network checks the names too (they apply to the calls after it)
    unfitted = TrajMoERegressor(**{**TINY, "finetune_frozen": ("towr",)})
    with pytest.raises(ValueError, match="towr"):
        unfitted.partial_fit(train)
    assert not hasattr(unfitted, "net_")
    # and so does fit, before any epoch (not at the first partial_fit after a pre-training run)
    with pytest.raises(ValueError, match="towr"):
        unfitted.fit(train)
    assert not hasattr(unfitted, "net_")


def test_partial_fit_on_unfitted_model_initialises(nyc):
    train, test, _ = nyc
    model = TrajMoERegressor(**TINY).partial_fit(train)
    assert len(model.net_.history) == 1                          # finetune_epochs, not max_epochs
    assert model.cities_ == ["nyc"]
    assert len(model.predict(test)) == len(test)


def test_same_random_state_identical_predictions(nyc):
    train, test, _ = nyc
    runs = []
    for _ in range(2):
        model = TrajMoERegressor(**{**TINY, "max_epochs": 1}).fit(train)
        model.partial_fit(test)
        runs.append(model.predict_topk(test, k=3))
    assert runs[0][0].tolist() == runs[1][0].tolist()
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    other = TrajMoERegressor(**{**TINY, "max_epochs": 1, "random_state": 1}).fit(train).partial_fit(test)
    assert not np.array_equal(other.predict_topk(test, k=3)[1], runs[0][1])


def test_pickle_and_joblib_round_trip(nyc_model, nyc, tmp_path):
    _, test, _ = nyc
    labels, scores = nyc_model.predict_topk(test, k=3)
    again = pickle.loads(pickle.dumps(nyc_model))
    l2, s2 = again.predict_topk(test, k=3)
    assert l2.tolist() == labels.tolist()
    np.testing.assert_array_equal(s2, scores)
    joblib.dump(nyc_model, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    assert loaded.predict(test).tolist() == labels[:, 0].tolist()
    pd.testing.assert_series_equal(loaded.target_ranks(test), nyc_model.target_ranks(test))


def test_clone_is_unfitted_with_same_params(two_city):
    model, _, _ = two_city
    fresh = clone(model)
    assert fresh.get_params() == model.get_params()
    for attr in ("net_", "encoder_", "cities_"):
        assert not hasattr(fresh, attr)
    with pytest.raises(NotFittedError):
        fresh.predict(pd.DataFrame({"user_id": [1], "day": [0], "slot": [0], "x": [1], "y": [1]}))


# --------------------------------------------------------------------------------------------------
# scikit-learn API rules, for every estimator of the package
# --------------------------------------------------------------------------------------------------
ESTIMATORS = [TrajMoERegressor(d_model=16, n_layers=1, max_epochs=1, device="cpu"),
              LSTMRegressor(d_model=16, n_layers=1, max_epochs=1, device="cpu"),
              TransformerRegressor(d_model=16, n_layers=1, max_epochs=1, device="cpu"), PopularityBaseline(),
              MarkovBaseline(), HistoryFrequencyBaseline(), SpatialSemanticEncoder()]
API_CHECKS = [ec.check_estimator_cloneable, ec.check_estimator_tags_renamed, ec.check_valid_tag_types,
              ec.check_estimator_repr, ec.check_no_attributes_set_in_init,
              ec.check_do_not_raise_errors_in_init_or_set_params, ec.check_mixin_order,
              ec.check_get_params_invariance, ec.check_set_params, ec.check_parameters_default_constructible]


def _id(obj):
    return getattr(obj, "__name__", type(obj).__name__)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=_id)
@pytest.mark.parametrize("check", API_CHECKS, ids=_id)
def test_sklearn_api_checks(estimator, check):
    check(type(estimator).__name__, clone(estimator))


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=_id)
def test_sklearn_check_estimator_runs_what_applies(estimator):
    with pytest.warns(ec.SkipTestWarning, match="requires input"):
        results = ec.check_estimator(clone(estimator), legacy=False, on_fail=None)
    assert [r["status"] for r in results] == ["passed"]


@pytest.mark.parametrize("cls", [TrajMoERegressor, LSTMRegressor, TransformerRegressor, PopularityBaseline, MarkovBaseline, HistoryFrequencyBaseline,
                                 SpatialSemanticEncoder])
def test_init_stores_params_unchanged(cls):
    params = inspect.signature(cls.__init__).parameters
    sentinel = {name: object() for name in params if name != "self"}
    est = cls(**sentinel)
    assert all(getattr(est, name) is value for name, value in sentinel.items())
    assert est.get_params(deep=False) == sentinel
    fresh = cls()
    assert fresh.set_params(**{n: 7 for n in sentinel}) is fresh
    assert fresh.get_params() == {n: 7 for n in sentinel}


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=_id)
def test_fit_rules_on_visit_frames(estimator, nyc):
    train, test, _ = nyc
    est = clone(estimator)
    assert "y" in inspect.signature(est.fit).parameters
    for method in ("predict", "predict_topk", "target_ranks", "score", "transform", "locate"):
        if hasattr(est, method):
            with pytest.raises(NotFittedError):
                getattr(est, method)(test)
    params = est.get_params()
    attrs = set(vars(est))
    assert est.fit(train, y=None) is est
    assert est.get_params() == params                            # fit changes no parameter
    new_public = [a for a in set(vars(est)) - attrs if not a.endswith("_") and not a.startswith("_")]
    assert new_public == []
    if hasattr(est, "score"):
        assert 0.0 <= est.score(test, y=None) <= 1.0
    if hasattr(est, "partial_fit"):
        assert est.partial_fit(test, y=None) is est


# ------------------------------------------------------------------ open vocabulary at predict time
def _grid_users(n_users, seed, shift_x=0):
    rng = np.random.default_rng(seed)
    n = n_users * 20
    return pd.DataFrame({"user_id": np.repeat(np.arange(n_users), 20) + 1000 * seed,
                         "day": np.tile(np.repeat(np.arange(4), 5), n_users),
                         "slot": np.tile(np.arange(20) % 5 * 8 + 4, n_users),
                         "x": rng.integers(0, 6, n) + shift_x, "y": rng.integers(0, 6, n)})


@pytest.mark.parametrize("make", [
    lambda: TrajMoERegressor(**{**TINY, "max_epochs": 1, "cell_embedding": True}),
    lambda: LSTMRegressor(d_model=16, n_layers=1, max_epochs=1, device="cpu", random_state=0),
    lambda: MarkovBaseline(), lambda: HistoryFrequencyBaseline()])
def test_cells_outside_the_region_are_scored_not_lost(make):
    est = make().fit(_grid_users(20, seed=0))
    n_fitted = est.encoder_.cities_["city"].n_locations
    state = ({k: v.clone() for k, v in est.net_.module_.state_dict().items()} if hasattr(est, "net_") else None)
    test = _grid_users(10, seed=1)
    test.loc[::7, "x"] = 40                              # 20 km east: outside the region (2 km margin)
    table = est.target_table(test)
    outside = table["oov"].to_numpy()
    assert 0 < outside.mean() < 0.3
    assert (table["rank"] <= n_fitted + 3 * 10).all()   # no guaranteed miss: every target has a real rank
    labels = est.predict(test)
    assert len(labels) == len(test) and all(isinstance(label, str) for label in labels)
    # predicting changed nothing: same cells, same weights
    assert est.encoder_.cities_["city"].n_locations == n_fitted and est.encoder_.cities_["city"].n_unseen == 0
    if state is not None:
        after = est.net_.module_.state_dict()
        assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)


@pytest.mark.parametrize("projected", [False, True])
def test_prepare_reuses_the_cells_located_for_the_unseen_cells_with_the_same_result(projected, data_home):
    """A scoring call locates X's cells once (for the cells outside the region) and _prepare
    reuses them: the same windows' input as locating anew, with duplicates, a shuffled order,
    cells outside the region and (on a projected city) an outlier."""
    if projected:
        visits = load_foursquare_nyc().visits
        users = visits["user_id"].unique()
        train, test = visits[visits.user_id.isin(users[:20])], visits[visits.user_id.isin(users[20:26])].copy()
        test.iloc[::9, test.columns.get_loc("lat")] += 0.5          # 55 km north: outside the region
        test.iloc[5, test.columns.get_loc("lat")], test.iloc[5, test.columns.get_loc("lon")] = 0.0, 0.0   # null island
    else:
        train, test = _grid_users(20, seed=0), _grid_users(10, seed=1)
        test.loc[::7, "x"] = 40
    test = pd.concat([test, test.iloc[:4]]).sample(frac=1.0, random_state=0)      # duplicates, shuffled
    test.index = np.arange(len(test))[::-1] * 3                                     # labels, not positions
    est = HistoryFrequencyBaseline().fit(train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with est._unseen_cells(test):
            assert est.encoder_.cities_[est.cities_[0]].n_unseen > 0
            reused, anew = est._prepare(test), est._prepare(test.copy())          # a copy: located anew
    assert reused.twin is not None
    for name in ("order", "location", "user_key", "city_index", "cell", "twin"):
        np.testing.assert_array_equal(getattr(reused, name), getattr(anew, name), err_msg=name)
    assert (reused.location >= 0).mean() > 0.9 and (reused.location < 0).sum() == (1 if projected else 0)


def test_closed_vocabulary_keeps_the_old_misses():
    est = HistoryFrequencyBaseline(encoder=SpatialSemanticEncoder(region_margin=None)).fit(_grid_users(20, seed=0))
    test = _grid_users(10, seed=1)
    test.loc[::7, "x"] = 40
    table = est.target_table(test)
    assert table["oov"].any()
    assert (table.loc[table["oov"], "rank"] == np.iinfo(np.int64).max).all()


@pytest.mark.parametrize("margin, says", [(2000.0, "lies in a cell the model never saw"),
                                           (None, "out of the vocabulary")])
def test_a_frame_wholly_outside_the_region_warns_once_per_call(margin, says):
    est = MarkovBaseline(encoder=SpatialSemanticEncoder(region_margin=margin)).fit(_grid_users(20, seed=0))
    test = _grid_users(10, seed=1)
    # some visits outside: the open vocabulary at work, no warning
    partly = test.assign(x=lambda d: np.where(d.index % 7 == 0, 40, d.x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        est.predict(partly)
    # every visit 20 km east: another place, or a mislabelled city
    with pytest.warns(DataWarning) as record:
        est.predict(test.assign(x=test.x + 40))
    messages = [str(w.message) for w in record if "region the model was fitted on" in str(w.message)]
    assert len(messages) == 1
    assert messages[0].startswith("city 'city': none of the 200 visits scored lies in the region") and says in messages[0]


def test_cell_embedding_survives_a_grown_vocabulary():
    est = TrajMoERegressor(**{**TINY, "max_epochs": 1, "cell_embedding": True}).fit(_grid_users(20, seed=0))
    module = est.net_.module_
    with torch.no_grad():
        module.city0_residual.copy_(torch.arange(module.city0_residual.shape[0], dtype=torch.float)[:, None])
    labels = est.encoder_.location_table("city")["label"].tolist()
    est.partial_fit(_grid_users(5, seed=2, shift_x=30))   # the region grows around the new cells
    table = est.encoder_.location_table("city")
    residual = est.net_.module_.city0_residual.detach()[:, 0]
    old = table["label"].isin(labels).to_numpy()
    assert residual.shape[0] == len(table) > len(labels)
    # fitted rows moved with their cells (up to one epoch of updates), new rows start near zero
    moved = pd.Series(residual[torch.as_tensor(old.copy())].numpy(), index=table.loc[old, "label"])
    np.testing.assert_allclose(moved[labels].to_numpy(), np.arange(len(labels)), atol=0.2)
    assert residual[torch.as_tensor(~old.copy())].abs().max() < 0.2


def test_history_gives_the_loss_of_every_epoch():
    est = TrajMoERegressor(**{**TINY, "max_epochs": 2, "validation_fraction": 0.3})
    with pytest.raises(NotFittedError):
        est.history_
    est.fit(_grid_users(20, seed=0))
    first = est.history_
    assert list(first.columns) == ["epoch", "train_loss", "valid_loss", "valid_acc1", "valid_mrr", "lr", "dur"]
    assert len(first) == len(est.net_.history) >= 1 and first["train_loss"].notna().all()
    assert first["valid_loss"].notna().all()
    # 36 cells drawn at random: about chance level, and Acc@1 never above MRR
    assert ((first["valid_acc1"] >= 0) & (first["valid_acc1"] <= first["valid_mrr"]) & (first["valid_mrr"] < 0.5)).all()
    est.partial_fit(_grid_users(5, seed=3))
    after = est.history_
    assert len(after) == len(first) + 1 and after[["valid_loss", "valid_mrr"]].iloc[-1].isna().all()


def test_validation_split_by_time_holds_out_each_users_last_visits():
    # 4 users, 10 visits each on day 0; visit i of user u in cell (x, y) = (i, 10 + u)
    X = pd.DataFrame({"user_id": np.repeat(np.arange(4), 10), "day": 0, "slot": np.tile(np.arange(10) * 2, 4),
                      "x": np.tile(np.arange(10), 4), "y": np.repeat(np.arange(4) + 10, 10)})
    est = LSTMRegressor(d_model=16, n_layers=1, max_epochs=2, min_stays=2, validation_fraction=0.2,
                        validation_split="time", device="cpu", random_state=0).fit(X)
    assert est.history_["valid_mrr"].notna().all()             # validated every epoch
    train, valid = est._training_windows(X, holdout=True)
    cell_of = est.encoder_.location_table("city").set_index("location_id")[["ix", "iy"]]
    origin = est.encoder_.locate(X.iloc[:1])[["ix", "iy"]].to_numpy()[0] - (0, 10)

    def visits(windows):        # (user, visit index) of every token
        cells = cell_of.loc[windows.location[windows.location >= 0]].to_numpy() - origin
        return sorted((int(y) - 10, int(x)) for x, y in cells)

    # the last 20 % of each user's visits (visits 8 and 9) validate, the others train
    assert visits(valid) == [(u, i) for u in range(4) for i in (8, 9)]
    assert visits(train) == [(u, i) for u in range(4) for i in range(8)]
    # users: every visit of one user (of 4, 20 % rounded up) validates
    by_users = clone(est).set_params(validation_split="users").fit(X)
    train, valid = by_users._training_windows(X, holdout=True)
    assert len(visits(valid)) == 10 and len(visits(train)) == 30
    assert {u for u, _ in visits(valid)}.isdisjoint(u for u, _ in visits(train))
    with pytest.raises(ValueError, match="validation_split"):
        clone(est).set_params(validation_split="visits").fit(X)
    # 0.7 of 10 visits is 7 (1 - 0.7 is 0.30000000000000004 in floating point)
    prep = est._prepare(X)
    assert prep.last_visits(0.7).sum() == 4 * 7
    # last visits too few for a window: fit says it trains without validation
    with pytest.warns(DataWarning, match="trains on every visit without validation"):
        few = clone(est).set_params(validation_fraction=0.05).fit(X)
    assert few.history_["valid_mrr"].isna().all()
    # nearly every visit held out: the error names validation_fraction
    with pytest.raises(ValueError, match="lower validation_fraction"):
        clone(est).set_params(validation_fraction=0.95).fit(X)


@pytest.mark.parametrize("cls", [LSTMRegressor, TransformerRegressor])
def test_tied_id_embeddings_rank_cells_by_their_input_embeddings(cls):
    X = _grid_users(12, seed=0)
    est = cls(d_model=16, n_layers=1, max_epochs=1, tie_embeddings=True, device="cpu", random_state=0).fit(X)
    module = est.net_.module_
    assert not hasattr(module, "city0_id_out")
    assert torch.equal(module.city_encoding(0)["candidates"], module.city0_id_in[:-1])
    assert len(est.predict(X)) == len(X)
    with pytest.raises(ValueError, match="needs location_ids=True"):
        cls(d_model=16, n_layers=1, max_epochs=1, location_ids=False, tie_embeddings=True, device="cpu").fit(X)


def test_valid_ranking_records_acc1_and_mrr_of_the_validation_targets_only():
    from skorch.history import History

    from trajmoe.estimators._training import ValidRanking

    class Net:
        history = History()

    net = Net()
    net.history.new_epoch()
    callback = ValidRanking(block=2)                       # 2 scores at a time: one token per block
    callback.on_epoch_begin(net)
    # one dimension, cells scored 1, 2, 3 times the query
    y_pred = {"query": torch.tensor([[[1.0], [-1.0], [0.0], [5.0]]]), "candidates": torch.tensor([[1.0], [2.0], [3.0]])}
    y_true = {"next_location": torch.tensor([[2, 2, 0, -100]]), "next_gap": torch.zeros(1, 4, dtype=torch.long)}
    callback.on_batch_end(net, batch=({}, y_true), training=False, y_pred=y_pred)
    # ranks 1 (best cell), 3 (worst cell) and 3 (all tied: pessimistic); the ignored position is not scored
    callback.on_batch_end(net, batch=({}, {**y_true, "next_location": torch.tensor([[0, 0, 0, 0]])}),
                          training=True, y_pred=y_pred)                      # training batches are not scored
    callback.on_epoch_end(net)
    assert net.history[-1, "valid_acc1"] == pytest.approx(1 / 3)
    assert net.history[-1, "valid_mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)


def test_early_stopping_on_a_ranking_metric_keeps_its_best_epoch():
    from skorch.callbacks import Callback

    class Snapshots(Callback):
        def initialize(self):
            self.states = []
            return self

        def on_epoch_end(self, net, **kwargs):
            self.states.append({k: v.clone() for k, v in net.module_.state_dict().items()})

    est = LSTMRegressor(d_model=16, n_layers=1, max_epochs=6, patience=6, validation_fraction=0.3, lr=0.2,
                        device="cpu", random_state=0, callbacks=[("snapshots", Snapshots())])
    assert est.monitor == "valid_mrr"                   # the ID models' default
    est.fit(_grid_users(20, seed=0))
    history = est.history_
    states = dict(est.net_.callbacks_)["snapshots"].states
    best_mrr, best_loss = int(history["valid_mrr"].argmax()), int(history["valid_loss"].argmin())
    assert best_mrr != best_loss and best_mrr < len(history) - 1       # a case where the monitor matters
    kept = est.net_.module_.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in states[best_mrr].items())
    assert not all(torch.equal(kept[k], v) for k, v in states[best_loss].items())
    with pytest.raises(ValueError, match="monitor"):
        clone(est).set_params(monitor="valid_ndcg").fit(_grid_users(20, seed=0))


def test_monitor_mistakes_get_clear_errors_and_routed_callback_settings_go_through_set_params():
    X = _grid_users(12, seed=0)
    tiny = dict(d_model=16, n_layers=1, max_epochs=1, device="cpu", random_state=0)
    with pytest.raises(ValueError, match="set the estimator's monitor parameter"):
        TrajMoERegressor(**TINY, callbacks__early_stopping__monitor="valid_mrr").fit(X)
    with pytest.raises(ValueError, match="callbacks__valid_ranking=None drops it"):
        LSTMRegressor(**tiny, callbacks__valid_ranking=None).fit(X)
    LSTMRegressor(**tiny, monitor="valid_loss", callbacks__valid_ranking=None).fit(X)      # nothing to watch there
    # a replacement that records nothing: a clear error (was skorch's KeyError), the estimator left unfitted
    est = LSTMRegressor(**tiny, callbacks__valid_ranking=skorch.callbacks.Callback())
    with pytest.raises(ValueError, match=r"monitors 'valid_mrr', which no callback recorded in epoch 1 "
                                         r"\(validation scores recorded: \['valid_loss'\]\)"):
        est.fit(X)
    assert not hasattr(est, "net_")
    est = LSTMRegressor(**tiny).set_params(callbacks__early_stopping__patience=2, callbacks__valid_ranking__block=100)
    assert est.get_params()["callbacks__early_stopping__patience"] == 2
    est.fit(X)
    callbacks = dict(est.net_.callbacks_)
    assert callbacks["early_stopping"].patience == 2 and callbacks["valid_ranking"].block == 100


def test_routed_callbacks_that_need_validation_are_refused_without_validation_users():
    from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR

    X = _grid_users(12, seed=0)
    tiny = dict(d_model=16, n_layers=1, max_epochs=3, device="cpu", random_state=0, validation_fraction=0.0)
    plateau = skorch.callbacks.LRScheduler(policy=ReduceLROnPlateau, monitor="valid_acc1", mode="max")
    # validation_fraction=0: no early stopping and no validation scores, so these were dropped
    # silently (early stopping, ranking) or failed after the first epoch (a plateau on valid_acc1)
    for routed, message in (({"callbacks__early_stopping__patience": 5}, "callbacks__early_stopping__patience acts"),
                            ({"callbacks__valid_ranking__block": 10}, "callbacks__valid_ranking__block acts"),
                            ({"callbacks__lr_scheduler": plateau}, "monitors 'valid_acc1', a validation score")):
        est = LSTMRegressor(**tiny, **routed)
        with pytest.raises(ValueError, match=message + ".*validation_fraction=0 holds out nothing"):
            est.fit(X)
        assert not hasattr(est, "net_")
    # a schedule by epochs needs no validation; with validation users the same settings run
    steps = skorch.callbacks.LRScheduler(policy=StepLR, step_size=1, gamma=0.5)
    est = LSTMRegressor(**tiny, callbacks__lr_scheduler=steps, callbacks__early_stopping=None).fit(X)
    assert est.history_["lr"].tolist() == pytest.approx([est.lr, est.lr / 2, est.lr / 4])
    est = LSTMRegressor(**{**tiny, "validation_fraction": 0.3}, callbacks__early_stopping__patience=5).fit(X)
    assert dict(est.net_.callbacks_)["early_stopping"].patience == 5


def test_routed_names_that_would_be_ignored_or_fail_late_are_refused():
    """module__nope failed inside skorch with a raw TypeError; callbacks__clip__... with
    clip_grad=None was dropped without a word."""
    X = _grid_users(12, seed=0)
    tiny = dict(d_model=16, n_layers=1, max_epochs=1, device="cpu", random_state=0)
    with pytest.raises(ValueError, match=r"module__nope: LSTMNetwork takes no parameter 'nope'; it takes \[.*'d_model'"):
        LSTMRegressor(**tiny, module__nope=1).fit(X)
    with pytest.raises(ValueError, match=r"callbacks__clip__gradient_clip_value: clip_grad=None adds no gradient "
                                         r"clipping callback"):
        LSTMRegressor(**tiny, clip_grad=None, callbacks__clip__gradient_clip_value=0.5).fit(X)
    est = LSTMRegressor(**tiny, callbacks__clip__gradient_clip_value=0.5).fit(X)
    assert dict(est.net_.callbacks_)["clip"].gradient_clip_value == 0.5


def test_the_epoch_table_has_no_colour_codes_in_a_file(capsys):
    """skorch colours the best scores with ANSI codes, which a log file showed as [36m9.5573[0m."""
    LSTMRegressor(d_model=16, n_layers=1, max_epochs=2, device="cpu", random_state=0, verbose=1,
                  validation_fraction=0.3).fit(_grid_users(12, seed=0))
    out = capsys.readouterr().out
    assert "valid_loss" in out and "\x1b[" not in out


def test_callbacks_of_one_class_are_numbered_as_skorch_numbers_them():
    """Two unnamed callbacks of one class were refused as a duplicate name; skorch names them
    <class>_1 and <class>_2, and so routed parameters reach each."""
    X = _grid_users(12, seed=0)
    clip = skorch.callbacks.GradientNormClipping
    est = LSTMRegressor(d_model=16, n_layers=1, max_epochs=1, device="cpu", random_state=0,
                        callbacks=[clip(1.0), clip(2.0)], callbacks__GradientNormClipping_2__gradient_clip_value=3.0)
    callbacks = dict(est.fit(X).net_.callbacks_)
    assert callbacks["GradientNormClipping_1"].gradient_clip_value == 1.0
    assert callbacks["GradientNormClipping_2"].gradient_clip_value == 3.0


def test_callbacks_of_the_list_that_need_validation():
    """callbacks=[...] entries that monitor a validation score: refused by a fit without
    validation users (a raw KeyError after the first epoch), and left out of partial_fit with a
    warning (the user guide's Checkpoint(dirname=...) made a later partial_fit fail with
    "Key 'valid_loss_best' was not found in history")."""
    X = _grid_users(12, seed=0)
    tiny = dict(d_model=16, n_layers=1, max_epochs=1, device="cpu", random_state=0)
    est = LSTMRegressor(**tiny, validation_fraction=0.0, callbacks=[skorch.callbacks.EarlyStopping()])
    with pytest.raises(ValueError, match=r"callbacks: EarlyStopping monitors 'valid_loss', a validation score, but "
                                         r"validation_fraction=0 holds out nothing"):
        est.fit(X)
    assert not hasattr(est, "net_")
    with pytest.raises(ValueError, match=r"callbacks holds 42: give skorch callbacks"):
        LSTMRegressor(**tiny, callbacks=[42]).fit(X)
    checkpoint = skorch.callbacks.Checkpoint(dirname=None, f_params=None, f_optimizer=None, f_criterion=None,
                                             f_history=None)
    est = LSTMRegressor(**tiny, validation_fraction=0.3, callbacks=[checkpoint]).fit(X)
    assert "Checkpoint" in dict(est.net_.callbacks_)
    with pytest.warns(DataWarning, match=r"callbacks \[\"Checkpoint \(monitor='valid_loss_best'\)\"\] act on "
                                         r"validation scores.*left out"):
        est.partial_fit(X)
    assert "Checkpoint" not in dict(est.net_.callbacks_) and len(est.history_) == 2


def test_a_routed_plateau_scheduler_runs_at_any_epochs_and_records_the_rate_of_the_epoch_that_stops():
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    X = _grid_users(12, seed=0)
    params = dict(d_model=16, n_layers=1, device="cpu", random_state=0)
    # after the first epoch every epoch "stalls" (threshold: a millionfold rise), so the rate halves
    # after each; these users' validation Acc@1 stays 0, so early stopping on it ends epoch 3
    plateau = skorch.callbacks.LRScheduler(policy=ReduceLROnPlateau, monitor="valid_acc1", mode="max", patience=0,
                                           factor=0.5, threshold=1e6)
    est = LSTMRegressor(**params, max_epochs=8, monitor="valid_acc1", patience=2, callbacks__lr_scheduler=plateau)
    history = est.fit(X).history_
    names = [name for name, _ in est.net_.callbacks_]
    assert names.index("valid_ranking") < names.index("lr_scheduler") < names.index("early_stopping")
    assert history["epoch"].tolist() == [1, 2, 3] and (history["valid_acc1"] == 0).all()
    # the rate each epoch trained with, the last one too (was NaN: early stopping ended the epoch first)
    assert history["lr"].tolist() == pytest.approx([est.lr, est.lr, est.lr / 2])
    # the default steps need 3 epochs; a routed scheduler runs with fewer (it was dropped silently)
    short = LSTMRegressor(**params, max_epochs=2, callbacks__lr_scheduler=plateau).fit(X)
    assert short.history_["lr"].tolist() == pytest.approx([est.lr, est.lr])
    assert "lr_scheduler" in dict(short.net_.callbacks_)
    assert "lr_scheduler" not in dict(LSTMRegressor(**params, max_epochs=2).fit(X).net_.callbacks_)
    # a parameter of the default schedule, which 2 epochs do not have: refused, not dropped silently
    with pytest.raises(ValueError, match=r"callbacks__lr_scheduler__gamma: with max_epochs=2 \(< 3\) fit adds no"):
        LSTMRegressor(**params, max_epochs=2, callbacks__lr_scheduler__gamma=0.5).fit(X)


def test_a_run_that_stops_early_on_a_step_of_the_schedule_ends_at_the_stepped_rate(tmp_path):
    # steps at epochs 4, 6, 9 of 10; these users' validation Acc@1 stays 0, so patience 3 stops at epoch 4
    X = _grid_users(12, seed=0)
    params = dict(d_model=16, n_layers=1, device="cpu", random_state=0, max_epochs=10, monitor="valid_acc1",
                  patience=3, checkpoint_dir=tmp_path / "run")
    est = LSTMRegressor(**params).fit(X)
    assert est.history_["epoch"].tolist() == [1, 2, 3, 4]
    # the schedule steps at the end of epoch 4 before early stopping ends the run, as a run that reaches
    # max_epochs steps at its last epoch (was 1e-3: stopped before the step; a resumed run gave 4e-4)
    assert est.final_lr_ == pytest.approx(est.lr * 0.4)
    assert LSTMRegressor(**params).fit(X).final_lr_ == pytest.approx(est.final_lr_)     # resumed: the same


def test_held_out_users_without_a_target_train_instead_of_breaking_early_stopping():
    X = _grid_users(10, seed=0)
    # users 0-4 visit once a day: with one-day windows they have no next location to score
    X = X[(X["user_id"] >= 5) | (X["slot"] == 4)].reset_index(drop=True)
    params = dict(d_model=16, n_layers=1, max_epochs=2, min_stays=1, window_days=1, device="cpu")
    # seed 0 holds out one of users 0-4 (was: no valid_mrr recorded, skorch's KeyError; and a valid_loss of 0)
    history = LSTMRegressor(**params, random_state=0).fit(X).history_
    assert len(history) == 2 and history[["valid_loss", "valid_acc1", "valid_mrr"]].isna().all().all()
    history = LSTMRegressor(**params, random_state=3).fit(X).history_      # holds out one of users 5-9
    assert (history["valid_loss"] > 0).all() and (history["valid_mrr"] > 0).all()


def test_models_saved_before_the_monitor_parameter_keep_stopping_on_the_loss():
    est = LSTMRegressor(d_model=16, n_layers=1, max_epochs=1, device="cpu", random_state=0).fit(_grid_users(8, seed=0))
    state = est.__getstate__()
    del state["monitor"]
    old = LSTMRegressor.__new__(LSTMRegressor)
    old.__setstate__(state)
    assert old.monitor == "valid_loss" and LSTMRegressor().monitor == "valid_mrr"


def test_verbose_partial_fit_says_what_it_fine_tunes(capsys):
    """The log of a fine-tuning after fit says its windows, epochs, rate and batch size, and
    that its epochs and loss do not compare with fit's."""
    est = TrajMoERegressor(**{**TINY, "max_epochs": 1, "verbose": 1}).fit(_grid_users(8, seed=0))
    capsys.readouterr()
    est.set_params(finetune_lr=2e-3, finetune_batch_size=4).partial_fit(_grid_users(3, seed=1))
    out = capsys.readouterr().out
    n = len(est._training_windows(_grid_users(3, seed=1), holdout=False)[0])
    assert f"fine-tuning: {n} windows, 1 epoch(s) at lr 0.002, 4 windows a batch" in out
    assert "does not compare with fit's" in out
    TrajMoERegressor(**{**TINY, "max_epochs": 1}).fit(_grid_users(8, seed=0)).partial_fit(_grid_users(3, seed=1))
    assert "fine-tuning" not in capsys.readouterr().out        # silent unless verbose
