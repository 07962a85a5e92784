"""The estimator layer the scikit-learn way: parameters, city-grouped CV, pipelines, skorch
pass-through, the array-level core under scikit-learn's checks, scorers by name.

Small synthetic cities on an x/y grid (a 6 x 6 block of 500 m cells, 20 visits per user) keep the
networks tiny and the tests fast; the real-data tests of the same API are in test_estimator.py.
One test per item of the issue that asked for it, in its order.
"""

from __future__ import annotations

import inspect
import pickle
import warnings
from unittest import SkipTest

import numpy as np
import pandas as pd
import pytest
import sklearn
import torch
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.metrics import get_scorer_names
from sklearn.model_selection import (GridSearchCV, KFold, LeaveOneGroupOut, check_cv, cross_val_score,
                                     cross_validate)
from sklearn.pipeline import make_pipeline
from sklearn.utils import get_tags
from sklearn.utils import estimator_checks as ec
from skorch.callbacks import Checkpoint, ProgressBar

from trajmoe import (DataWarning, GravityBaseline, HistoryFrequencyBaseline, HistoryGravityBaseline,
                     LSTMRegressor, MarkovBaseline, PopularityBaseline, SpatialSemanticEncoder, TrajMoERegressor,
                     TransformerRegressor, UnknownCityError)
from trajmoe import metrics
from trajmoe._encoded import EncodedArray, EncodedFrame
from trajmoe.estimators import NextLocationEstimator, NextTokenClassifier
from trajmoe.estimators import _neural
from trajmoe.exceptions import SharedUsersWarning
from trajmoe.metrics import get_scorer
from trajmoe.model_selection import LeaveOneCityOut, UserKFold

TINY = dict(d_model=16, n_layers=1, max_epochs=1, device="cpu", random_state=0)
TRAJMOE = dict(TINY, n_heads=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def city_visits(city, n_users, seed, shift=0):
    """20 visits per user on a 6 x 6 block of cells, 4 days of 5 visits."""
    rng = np.random.default_rng(seed)
    n = n_users * 20
    return pd.DataFrame({"user_id": np.repeat(np.arange(n_users), 20) + 1000 * seed, "city": city,
                         "day": np.tile(np.repeat(np.arange(4), 5), n_users),
                         "slot": np.tile(np.arange(20) % 5 * 8 + 4, n_users),
                         "x": rng.integers(0, 6, n) + shift, "y": rng.integers(0, 6, n)})


@pytest.fixture(scope="module")
def two_cities():
    return pd.concat([city_visits("a", 12, seed=1), city_visits("b", 12, seed=2, shift=50)], ignore_index=True)


ALL_ESTIMATORS = [
    TrajMoERegressor(**TRAJMOE), LSTMRegressor(**TINY), TransformerRegressor(**TINY, n_heads=2),
    PopularityBaseline(), MarkovBaseline(), HistoryFrequencyBaseline(),
    GravityBaseline(beta=1.5, offset=250.0),
    HistoryGravityBaseline(beta=1.5, offset=250.0, history_weight=0.5, popularity_weight=0.1, recency_weight=0.0),
]


def _id(obj):
    return getattr(obj, "__name__", type(obj).__name__)


# ------------------------------------------------------------------------------------------------
# 2. parameters declared once, checked before any work
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [TrajMoERegressor, LSTMRegressor, TransformerRegressor, PopularityBaseline,
                                 MarkovBaseline, HistoryFrequencyBaseline, GravityBaseline,
                                 HistoryGravityBaseline])
def test_every_parameter_is_declared_and_subclasses_extend_the_parent(cls):
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
    assert set(params) <= set(cls._parameter_constraints), set(params) - set(cls._parameter_constraints)
    for parent in cls.__mro__[1:]:
        if "_parameter_constraints" in vars(parent) and issubclass(parent, NextLocationEstimator):
            assert parent._parameter_constraints.items() <= cls._parameter_constraints.items()


@pytest.mark.parametrize("make, match", [
    (lambda: TrajMoERegressor(**{**TRAJMOE, "router": "x"}), r"'router' parameter.*\{.*'star'.*\}. Got 'x'"),
    (lambda: TrajMoERegressor(**{**TRAJMOE, "preset": "huge"}), r"'preset' parameter.*'small'.*Got 'huge'"),
    (lambda: TrajMoERegressor(**{**TRAJMOE, "dropout": "a"}), r"'dropout' parameter.*\[0.0, 1.0\). Got 'a'"),
    (lambda: TrajMoERegressor(**{**TRAJMOE, "verbose": "yes"}), r"'verbose' parameter.*Got 'yes'"),
    (lambda: TrajMoERegressor(**{**TRAJMOE, "top_k": 4}), r"'top_k' parameter.*\[1, 3\] or None. Got 4"),
    (lambda: TrajMoERegressor(**{**TRAJMOE, "lr": float("inf")}), r"'lr' parameter.*Got inf"),
    (lambda: TrajMoERegressor(**{**TRAJMOE, "d_model": 18}), r"d_model=18 must be divisible by 4"),
    (lambda: TrajMoERegressor(**{**TRAJMOE, "device": "gpu"}), r"device='gpu' is not a torch device: use 'auto'"),
    (lambda: LSTMRegressor(**{**TINY, "location_ids": "yes"}), r"'location_ids' parameter.*Got 'yes'"),
    (lambda: PopularityBaseline(window_days=0), r"'window_days' parameter.*\[1, inf\). Got 0"),
    (lambda: PopularityBaseline(encoder="500m"), r"'encoder' parameter.*SpatialSemanticEncoder.*Got '500m'"),
    (lambda: HistoryGravityBaseline(combine="product"), r"'combine' parameter.*Got 'product'"),
])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_invalid_parameters_raise_before_any_work(make, match, method, two_cities, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the encoder was fitted before the parameters were checked")

    monkeypatch.setattr(SpatialSemanticEncoder, "fit", no_work)
    model = make()
    with pytest.raises(ValueError, match=match) as raised:
        getattr(model, method)(two_cities)
    assert not hasattr(model, "encoder_")
    if "must be divisible" not in match:                  # a value against the declared constraints
        assert isinstance(raised.value, InvalidParameterError)


def test_device_is_checked_against_what_torch_has(two_cities):
    if torch.cuda.is_available():
        bad, match = f"cuda:{torch.cuda.device_count()}", r"torch sees \d+ CUDA device"
    else:
        bad, match = "cuda", r"device='cuda', but torch has no CUDA device here.*use device='auto'.*or 'cpu'"
    with pytest.raises(InvalidParameterError, match=match):
        TrajMoERegressor(**{**TRAJMOE, "device": bad}).fit(two_cities)


def test_random_state_accepts_a_random_state_instance(two_cities):
    model = TrajMoERegressor(**{**TRAJMOE, "random_state": np.random.RandomState(0)}).fit(two_cities)
    assert model.predict(two_cities).shape == (len(two_cities),)
    gravity = GravityBaseline(random_state=np.random.RandomState(0), min_stays=2).fit(two_cities)
    assert gravity.beta_ >= 0


def test_set_params_after_fit_takes_effect_or_raises(two_cities):
    model = TrajMoERegressor(**{**TRAJMOE, "max_epochs": 3}).fit(two_cities)
    model.set_params(lr=1e-4, finetune_epochs=2)
    epochs = len(model.net_.history)
    model.partial_fit(two_cities)
    assert model.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert len(model.net_.history) == epochs + 2
    model.set_params(d_model=32)
    with pytest.raises(ValueError, match=r"set_params changed what fit fixed \(d_model: 16 -> 32\)"):
        model.partial_fit(two_cities)
    assert len(model.net_.history) == epochs + 2          # nothing was trained
    model.set_params(d_model=16, max_tokens=50)           # named as set, not as the network's max_len
    with pytest.raises(ValueError, match=r"set_params changed what fit fixed \(max_tokens: 144 -> 50\)"):
        model.partial_fit(two_cities)
    model.set_params(max_tokens=144).partial_fit(two_cities)   # set back: fine



@pytest.mark.parametrize("params, match", [
    ({"max_tokens": 0}, r"'max_tokens' parameter.*Got 0"),
    ({"window_days": -1}, r"'window_days' parameter.*Got -1"),
    ({"min_stays": -5}, r"'min_stays' parameter.*Got -5"),
    ({"moves_weight": float("nan")}, r"'moves_weight' parameter.*Got nan"),
    ({"city_tz": {"a": "Mars/Olympus"}}, r"city_tz\['a'\] = 'Mars/Olympus' is not a known IANA time zone"),
])
@pytest.mark.parametrize("method", ["predict", "predict_topk", "score", "target_table"])
def test_set_params_after_fit_is_checked_before_scoring(params, match, method, two_cities):
    # what scoring reads (windows, tokens, the rule's weights, time zones) is checked on every call,
    # as fit checks it: a bad value raises instead of scoring wrong, and the model stays as it was
    model = HistoryFrequencyBaseline(moves_weight=2).fit(two_cities)
    before = model.predict(two_cities)
    model.set_params(**params)
    with pytest.raises(ValueError, match=match):
        getattr(model, method)(two_cities)
    model.set_params(**HistoryFrequencyBaseline(moves_weight=2).get_params())
    np.testing.assert_array_equal(model.predict(two_cities), before)


def test_set_params_after_fit_is_checked_before_scoring_every_estimator(two_cities):
    gravity = HistoryGravityBaseline(beta=2.0, offset=250.0, history_weight=0.4, popularity_weight=0.1,
                                     recency_weight=0.5, min_stays=2).fit(two_cities)
    with pytest.raises(ValueError, match=r"moves_weight"):
        gravity.set_params(moves_weight=float("inf")).predict(two_cities)
    network = TrajMoERegressor(**TRAJMOE).fit(two_cities)
    with pytest.raises(ValueError, match=r"'window_days' parameter.*Got 0"):
        network.set_params(window_days=0).predict_topk(two_cities, k=3)

# ------------------------------------------------------------------------------------------------
# 3. city-grouped cross-validation, zero-shot scoring, users kept together
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=_id)
def test_leave_one_city_out_gives_finite_scores_for_every_estimator(estimator, two_cities):
    with pytest.warns(DataWarning, match=r"unknown to this model: scored zero-shot"):
        scores = cross_val_score(estimator, two_cities, cv=LeaveOneCityOut(), error_score="raise")
    assert scores.shape == (2,) and np.isfinite(scores).all()
    groups = cross_validate(clone(estimator), two_cities, groups=two_cities["city"], cv=LeaveOneGroupOut(),
                            scoring=["acc@1", "mrr"], error_score="raise")
    assert np.isfinite(groups["test_acc@1"]).all() and np.isfinite(groups["test_mrr"]).all()


def test_grid_search_with_leave_one_city_out(two_cities):
    search = GridSearchCV(TrajMoERegressor(**TRAJMOE), {"window_days": [2, 3]}, cv=LeaveOneCityOut(),
                          error_score="raise").fit(two_cities)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    search = GridSearchCV(MarkovBaseline(), {"encoder__cell_size": [250.0, 500.0]}, cv=LeaveOneCityOut(),
                          scoring="mrr", error_score="raise").fit(two_cities)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_zero_shot_policy_reads_nothing_of_the_targets_and_changes_nothing(two_cities):
    a, b = two_cities[two_cities.city == "a"], two_cities[two_cities.city == "b"]
    model = TrajMoERegressor(**TRAJMOE).fit(a)
    state = {k: v.clone() for k, v in model.net_.module_.state_dict().items()}
    pois = pd.DataFrame({"city": "b", "x": [52, 52], "y": [3, 3], "category": ["restaurant", "accommodation"]})
    b_cat = b.assign(poi_category="shop")               # names visited cells: not to be read
    with pytest.warns(DataWarning, match=r"Cities \['b'\] are unknown.*POI counts from pois.*no visit counts"):
        extended = model.encoder_.with_unseen_cities(b_cat, pois=pois)
    table = extended.cities_["b"]
    assert table.visit_counts.sum() == 0 and table.zero_shot_bin == model.encoder_.cities_["a"].unseen_popularity
    assert set(np.unique(table.popularity)) == {table.zero_shot_bin}
    assert table.poi_counts.sum() == 2                   # the two POIs, none of the visits' 'shop'
    assert "b" not in model.encoder_.cities_             # the fitted encoder is untouched
    # POIs of a city neither fitted nor scored (a misspelt name) are not used, and the note says so
    with pytest.warns(DataWarning, match=r"2 of the 2 POIs are of cities \['B'\], neither fitted nor in X") as caught:
        model.encoder_.with_unseen_cities(b, pois=pois.assign(city="B"))
    assert any("POI counts none (pass pois= of these cities" in str(w.message) for w in caught)
    with pytest.warns(DataWarning, match="scored zero-shot"):
        score = model.score(b, pois=pois)
        labels = model.predict(b, zero_shot=True)
    with pytest.raises(UnknownCityError, match=r"not seen: \['b'\].*partial_fit"):
        model.predict(b)                                  # predicting needs zero_shot=True
    with pytest.warns(DataWarning, match="X has no 'city' column.*add the column"):
        model.score(a.drop(columns="city"))
    assert 0 <= score <= 1 and all(label.startswith("b:") for label in labels)
    assert model.cities_ == ["a"] and list(model.encoder_.cities_) == ["a"]
    after = model.net_.module_.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    closed = PopularityBaseline(encoder=SpatialSemanticEncoder(region_margin=None)).fit(a)
    with pytest.raises(UnknownCityError, match="closed vocabulary.*Register it with partial_fit"):
        closed.score(b)


def test_scorers_and_evaluate_score_a_new_city_with_its_pois(two_cities):
    # the POIs of a city scored zero-shot are its features: every scoring entry point takes them
    a, b = two_cities[two_cities.city == "a"], two_cities[two_cities.city == "b"]
    model = TrajMoERegressor(**TRAJMOE).fit(a)
    cells = b[["x", "y"]].drop_duplicates().head(8)
    pois = cells.assign(city="b", category=["restaurant", "accommodation", "shop", "education"] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with_pois = model.target_ranks(b, pois=pois)
        assert not with_pois.equals(model.target_ranks(b))            # the POIs change the ranking
        mrr = metrics.mean_reciprocal_rank(with_pois.to_numpy())
        assert get_scorer("mrr")(model, b, pois=pois) == pytest.approx(mrr)
        assert get_scorer("acc@1")(model, b, pois=pois) == pytest.approx(model.score(b, pois=pois))
        assert metrics.evaluate(model, b, pois=pois)["mrr"] == pytest.approx(mrr)
        assert model.predict_and_evaluate(b, pois=pois)["report"]["mrr"] == pytest.approx(mrr)
    with pytest.raises(TypeError, match=r"takes the metadata pois only, got \['sample_weight'\]"):
        get_scorer("mrr")(model, b, sample_weight=np.ones(len(b)))
    # and routed by cross_validate to the named scorers (fitted on a, scored on b with b's POIs)
    split = [(np.flatnonzero(two_cities.city == "a"), np.flatnonzero(two_cities.city == "b"))]
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        routed = TrajMoERegressor(**TRAJMOE).set_fit_request(pois=True).set_score_request(pois=True)
        named = cross_validate(routed, two_cities, cv=split, scoring=["mrr", "acc@1"], params={"pois": pois})
        by_score = cross_validate(routed, two_cities, cv=split, params={"pois": pois})["test_score"]
    assert named["test_mrr"][0] == pytest.approx(mrr) and named["test_acc@1"][0] == by_score[0]


def test_counting_baselines_zero_shot_fall_back_as_documented(two_cities):
    a, b = two_cities[two_cities.city == "a"], two_cities[two_cities.city == "b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        popularity = PopularityBaseline().fit(a).target_ranks(b)
        markov = MarkovBaseline().fit(a).target_ranks(b)
        history = HistoryFrequencyBaseline().fit(a).target_ranks(b)
        n_cells = PopularityBaseline().fit(a).encoder_.with_unseen_cities(b).cities_["b"].n_locations
    assert (popularity == n_cells).all()                  # uniform: every target ties with every cell
    pd.testing.assert_series_equal(markov, history)       # the window's history


def test_user_kfold_keeps_users_together_and_row_splits_are_reported(two_cities):
    users = two_cities["city"] + ":" + two_cities["user_id"].astype(str)
    for train, test in UserKFold(n_splits=3).split(two_cities):
        assert not set(users.iloc[train]) & set(users.iloc[test])
    with pytest.warns(SharedUsersWarning, match=r"users of X were in the data.*cv=trajmoe.model_selection.UserKFold"):
        cross_val_score(HistoryFrequencyBaseline(), two_cities, cv=KFold(3, shuffle=True, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SharedUsersWarning)
        scores = cross_val_score(HistoryFrequencyBaseline(), two_cities, cv=UserKFold(3))
    assert np.isfinite(scores).all()

    # the fitted users are known by value: ids read back as floats or as text are the same users
    model = HistoryFrequencyBaseline().fit(two_cities)
    for ids in (two_cities["user_id"].astype(float), two_cities["user_id"].astype(float).astype(str)):
        with pytest.warns(SharedUsersWarning, match=r"users of X were in the data"):
            model.target_ranks(two_cities.assign(user_id=ids))


# ------------------------------------------------------------------------------------------------
# 4. the encoder as a pipeline step
# ------------------------------------------------------------------------------------------------
def test_encoder_pipeline_fits_predicts_scores_clones_pickles_and_matches_the_estimator(two_cities):
    a = two_cities[two_cities.city == "a"]
    train, test = a[a.user_id < 1008], a[a.user_id >= 1008]
    pipe = make_pipeline(SpatialSemanticEncoder(cell_size=250.0), TrajMoERegressor(**TRAJMOE)).fit(train)
    single = TrajMoERegressor(encoder=SpatialSemanticEncoder(cell_size=250.0), **TRAJMOE).fit(train)
    np.testing.assert_array_equal(pipe.predict(test), single.predict(test))
    assert pipe.score(test) == single.score(test)
    assert pipe[-1].encoder_ is pipe[0]                 # the step's fitted encoder, not a copy
    fresh = clone(pipe)
    assert not hasattr(fresh[0], "cities_") and fresh.get_params()["spatialsemanticencoder__cell_size"] == 250.0
    again = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(again.predict(test), pipe.predict(test))
    pipe.set_output(transform="pandas")
    np.testing.assert_array_equal(pipe.predict(test), single.predict(test))
    search = GridSearchCV(make_pipeline(SpatialSemanticEncoder(), HistoryFrequencyBaseline()),
                          {"spatialsemanticencoder__cell_size": [250.0, 500.0]}, cv=UserKFold(2)).fit(a)
    assert search.best_params_["spatialsemanticencoder__cell_size"] in (250.0, 500.0)


def test_encoder_parameters_route_through_the_estimator_with_the_default_encoder(two_cities):
    model = TrajMoERegressor().set_params(encoder__cell_size=250)
    assert isinstance(model.encoder, SpatialSemanticEncoder) and model.encoder.cell_size == 250
    assert model.get_params()["encoder__cell_size"] == 250
    search = GridSearchCV(HistoryFrequencyBaseline(), {"encoder__cell_size": [250.0, 500.0]}, cv=UserKFold(2))
    search.fit(two_cities)
    assert search.best_estimator_.encoder_.cell_size in (250.0, 500.0)


def test_encoder_output_carries_the_visits_and_the_encoder(two_cities):
    a = two_cities[two_cities.city == "a"]
    encoder = SpatialSemanticEncoder().fit(a)
    out = encoder.transform(a)
    assert isinstance(out, EncodedArray) and out.shape == (len(a), 37)
    assert out.visits is a and out.encoder is encoder
    assert out[:, :3].visits is None and type(out * 2) is np.ndarray       # derived arrays carry nothing
    frame = encoder.set_output(transform="pandas").transform(a)
    assert isinstance(frame, EncodedFrame) and frame.visits is a and frame.index.equals(a.index)
    assert list(frame.columns) == list(encoder.get_feature_names_out())
    assert type(frame.head()) is pd.DataFrame                           # so does any pandas operation
    # a pickle keeps what is carried; pickled with its encoder (a Pipeline(memory=...) cache stores
    # the output beside the fitted step) it carries that very encoder
    for output in (out, frame):
        again, step = pickle.loads(pickle.dumps((output, encoder)))
        assert type(again) is type(output) and again.encoder is step and again.visits.equals(a)
        np.testing.assert_array_equal(np.asarray(again), np.asarray(output))
    encoder.set_output(transform="default")
    with pytest.raises(ValueError, match="give the encoder once"):
        HistoryFrequencyBaseline(encoder=SpatialSemanticEncoder()).fit(out)
    with pytest.raises(ValueError, match="give pois to that step"):
        HistoryFrequencyBaseline().fit(out, pois=pd.DataFrame({"x": [1], "y": [1], "category": ["shop"]}))
    model = HistoryFrequencyBaseline().fit(out)
    other = SpatialSemanticEncoder().fit(a).transform(a)
    with pytest.raises(ValueError, match="encoded by another SpatialSemanticEncoder"):
        model.predict(other)


# ------------------------------------------------------------------------------------------------
# 5. skorch open to users
# ------------------------------------------------------------------------------------------------
def test_callbacks_and_parameters_routed_to_the_net(two_cities, tmp_path):
    model = TrajMoERegressor(**{**TRAJMOE, "max_epochs": 2}, callbacks=[Checkpoint(dirname=str(tmp_path), monitor=None)],
                             optimizer__weight_decay=0.01, iterator_train__num_workers=0,
                             callbacks__early_stopping__patience=7, callbacks__clip=None)
    params = model.get_params()
    assert params["optimizer__weight_decay"] == 0.01 and clone(model).get_params()["callbacks__clip"] is None
    model.fit(two_cities)
    callbacks = dict(model.net_.callbacks_)
    assert callbacks["early_stopping"].patience == 7 and "clip" not in callbacks and "Checkpoint" in callbacks
    assert {"params.pt", "optimizer.pt", "history.json"} <= {p.name for p in tmp_path.iterdir()}
    assert model.net_.optimizer_.param_groups[0]["weight_decay"] == 0.01
    assert len(model.history_) == 2 and model.history_["train_loss"].notna().all()
    assert model.get_params() == params                  # fit changed no parameter
    with pytest.raises(ValueError, match=r"callbacks__nope__x: no callback named 'nope'"):
        TrajMoERegressor(**TRAJMOE, callbacks__nope__x=1).fit(two_cities)
    with pytest.raises(TypeError, match="takes no train_split: fit holds out validation_fraction"):
        TrajMoERegressor(**TRAJMOE, train_split=None).fit(two_cities)
    with pytest.warns(UserWarning, match=r"has no parameter \['lrr'\]: set_params stores it, and the next fit"):
        misspelt = TrajMoERegressor(**TRAJMOE).set_params(lrr=0.1)
    with pytest.raises(ValueError, match=r"unknown parameter 'lrr'.*routed to the skorch net start with"):
        misspelt.fit(two_cities)


def test_lr_schedule_does_not_need_a_validation_split(two_cities):
    model = TrajMoERegressor(**{**TRAJMOE, "max_epochs": 3, "validation_fraction": 0.0}).fit(two_cities)
    lr = model.history_["lr"].to_numpy()
    assert model.history_["valid_loss"].isna().all()
    np.testing.assert_allclose(lr, [1e-3, 4e-4, 1.6e-4])


def test_progress_bar_on_a_terminal_or_in_a_notebook(monkeypatch):
    model = TrajMoERegressor(**{**TRAJMOE, "verbose": 1})
    monkeypatch.setattr(_neural.sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(_neural, "_in_notebook", lambda: False)
    assert "progress" not in dict(model._callbacks(validate=True))
    monkeypatch.setattr(_neural, "_in_notebook", lambda: True)
    assert isinstance(dict(model._callbacks(validate=True))["progress"], ProgressBar)


# ------------------------------------------------------------------------------------------------
# 7. the array-level core passes every scikit-learn check; the frame estimators their API checks
# ------------------------------------------------------------------------------------------------
#: Checks of the array-level core that scikit-learn skips, and why.
EXPLAINED_SKIPS = {
    "check_array_api_input": "array API dispatch needs SCIPY_ARRAY_API=1 set before scipy is first imported; "
                             "the estimator does not declare array API support, so the check would only re-run "
                             "it on NumPy input with dispatch enabled",
}


def _check_name(check):
    return getattr(check, "func", check).__name__


@ec.parametrize_with_checks([NextTokenClassifier(device="cpu", random_state=0)])
def test_token_core_passes_every_sklearn_check(estimator, check):
    try:
        check(estimator)
    except SkipTest as exc:
        name = _check_name(check)
        if name not in EXPLAINED_SKIPS:
            pytest.fail(f"scikit-learn skipped {name} without an explanation here: {exc}")
        pytest.skip(f"{EXPLAINED_SKIPS[name]} ({exc})")


def test_token_core_learns_the_next_location():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 20, (300, 6))
    y = X[:, -1] % 7 + 100                               # a function of the last location
    model = NextTokenClassifier(device="cpu", random_state=0).fit(X[:200], y[:200])
    assert (model.predict(X[200:]) == y[200:]).mean() > 0.9
    assert list(model.classes_) == sorted(set(y[:200]))
    with pytest.raises(NotFittedError):
        NextTokenClassifier().predict(X)
    # a failed refit leaves the fitted model as it was (it kept the new width and classes, and then
    # refused the data it had been fitted on)
    before = model.predict_proba(X[200:])
    for bad_fit in (lambda: model.fit(np.zeros((4, 5)), [0.1, 0.2, 0.3, 0.4]),         # continuous y
                    lambda: model.set_params(lr=1e30).fit(X[:50, :3], y[:50])):        # diverges
        with pytest.raises(ValueError):
            bad_fit()
        model.set_params(lr=NextTokenClassifier().lr)
        assert model.n_features_in_ == 6 and list(model.classes_) == sorted(set(y[:200]))
        np.testing.assert_array_equal(model.predict_proba(X[200:]), before)
    unfitted = NextTokenClassifier(device="cpu")
    with pytest.raises(ValueError):
        unfitted.fit(np.zeros((4, 5)), [0.1, 0.2, 0.3, 0.4])
    assert not hasattr(unfitted, "n_features_in_")


#: Why each scikit-learn API check that fails on arrays does not apply to the visit-frame
#: estimators (they declare ``two_d_array=False``, so scikit-learn itself would skip them all);
#: each rule is tested on visit frames instead (test_estimator.py::test_fit_rules_on_visit_frames).
NOT_APPLICABLE = {
    "check_fit_score_takes_y": "fit needs a visit frame (user, time and place columns); the check feeds a "
                               "numeric array",
    "check_estimators_overwrite_params": "fit needs a visit frame, not an array of samples",
    "check_dont_overwrite_parameters": "fit needs a visit frame, not an array of samples",
    "check_estimators_fit_returns_self": "fit needs a visit frame, not an array of samples",
    "check_readonly_memmap_input": "fit needs a visit frame; a read-only memmap is an array",
    "check_n_features_in_after_fitting": "fit needs a visit frame, whose columns vary (optional columns); "
                                         "n_features_in_ is the encoder's",
    "check_positive_only_tag_during_fit": "fit needs a visit frame, not an array of samples",
}
FRAME_ESTIMATORS = [TrajMoERegressor(**TRAJMOE), LSTMRegressor(**TINY), TransformerRegressor(**TINY, n_heads=2),
                    PopularityBaseline(), MarkovBaseline(), HistoryFrequencyBaseline(), GravityBaseline(),
                    HistoryGravityBaseline(), SpatialSemanticEncoder()]


def _array_tagged(estimator):
    """The estimator as a subclass that says it takes 2-D arrays, so that scikit-learn runs its API
    checks instead of skipping them all."""
    cls = type(estimator)

    def tags(self):
        out = super(sub, self).__sklearn_tags__()
        out.input_tags.two_d_array = True
        return out

    sub = type(cls.__name__, (cls,), {"__sklearn_tags__": tags, "__module__": cls.__module__})
    return sub(**estimator.get_params(deep=False))


@pytest.mark.parametrize("estimator", FRAME_ESTIMATORS, ids=_id)
def test_frame_estimators_pass_every_api_check_that_applies(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = ec.check_estimator(_array_tagged(estimator), legacy=False, on_fail=None,
                                     expected_failed_checks=NOT_APPLICABLE)
    status = {r["check_name"]: r["status"] for r in results}
    failed = {name for name, s in status.items() if s not in ("passed", "xfail")}
    assert not failed, failed
    assert {name for name, s in status.items() if s == "xfail"} == set(NOT_APPLICABLE)


# ------------------------------------------------------------------------------------------------
# 8. scorers by name and the estimator type
# ------------------------------------------------------------------------------------------------
def test_scorers_by_name_and_estimator_type(two_cities):
    assert {"acc@1", "acc@5", "mrr", "ndcg@10", "acc@1_last", "mrr_last"} <= set(get_scorer_names())
    result = cross_validate(HistoryFrequencyBaseline(), two_cities, cv=UserKFold(2),
                            scoring=["acc@1", "acc@5", "mrr", "ndcg@10", "acc@1_last"])
    for name in ("acc@1", "acc@5", "mrr", "ndcg@10", "acc@1_last"):
        assert np.all((result[f"test_{name}"] >= 0) & (result[f"test_{name}"] <= 1))
    assert np.all(result["test_acc@5"] >= result["test_acc@1"])
    default = cross_val_score(HistoryFrequencyBaseline(), two_cities, cv=UserKFold(2))
    np.testing.assert_allclose(default, result["test_acc@1"])      # score() is Acc@1
    for estimator in ALL_ESTIMATORS:
        assert is_regressor(estimator) and get_tags(estimator).estimator_type == "regressor"
    assert type(check_cv(5, None, classifier=is_classifier(TrajMoERegressor()))) is KFold
    assert is_classifier(NextTokenClassifier())


@pytest.mark.parametrize("name", ["batch_size", "finetune_batch_size", "max_epochs", "min_stays"])
def test_a_bool_is_not_a_count(name):
    from sklearn.utils._param_validation import InvalidParameterError

    from trajmoe import LSTMRegressor, TrajMoERegressor

    for cls in (TrajMoERegressor, LSTMRegressor):
        with pytest.raises(InvalidParameterError, match=rf"'{name}' parameter .* must be a number, got True"):
            cls(**{name: True})._check_params()
    TrajMoERegressor(verbose=True)._check_params()          # a bool where a bool is meant stays valid


def test_the_gravity_baselines_say_when_they_are_not_deterministic():
    """Their parameter search holds out users drawn with random_state: without one, two fits on
    the same data give other parameters (beta_ .99, .87, 1.55 on 30 NYC users)."""
    from sklearn.utils import get_tags

    from trajmoe import GravityBaseline, HistoryGravityBaseline

    for cls in (GravityBaseline, HistoryGravityBaseline):
        assert get_tags(cls()).non_deterministic and not get_tags(cls(random_state=0)).non_deterministic
