"""trajmoe.pipeline: scikit-learn's Pipeline with partial_fit (fine-tuning through preprocessing
steps), on slices of real data.

Every test compares the pipeline with the manual steps it replaces (same seeds, same data): the
same weights, counts and predictions, not just "it runs".
"""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.dummy import DummyRegressor
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline as SklearnPipeline
from sklearn.pipeline import make_pipeline as sklearn_make_pipeline

from trajmoe import MarkovBaseline, SpatialSemanticEncoder, TrajMoERegressor, metrics
from trajmoe.datasets import load_foursquare_nyc, load_geolife
from trajmoe.exceptions import DataWarning, ZeroShotWarning
from trajmoe.model_selection import UserKFold
from trajmoe.pipeline import Pipeline, make_pipeline
from trajmoe.preprocessing import ShortUserFilter, StayPointDetector

TINY = dict(d_model=16, n_layers=1, n_heads=2, max_epochs=1, device="cpu", random_state=0)
SETTINGS = dict(dist_threshold=100.0, time_threshold=3.0, gap_threshold=30.0, include_last=True,
                city="beijing", tz="Asia/Shanghai")

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::trajmoe.exceptions.DataWarning")]


def _users(visits, start, stop):
    users = visits["user_id"].unique()
    return visits[visits["user_id"].isin(users[start:stop])]


@pytest.fixture(scope="module")
def nyc(data_home):
    """Source city: 12 NYC users; a second "city" b: 10 other NYC users under another name, and
    the NYC POIs under that name."""
    bunch = load_foursquare_nyc()
    source = _users(bunch.visits, 0, 12)
    target = _users(bunch.visits, 12, 22).assign(city="b")
    return source, target, bunch.pois.assign(city="b")


@pytest.fixture(scope="module")
def fixes(data_home):
    """GeoLife fixes in Beijing: fine-tuning users (001, 020) and a held-out user (000)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        f = load_geolife().fixes
    f = f[f["lat"].between(39.4, 41.1) & f["lon"].between(115.4, 117.6)]
    return f[f["user_id"].isin(["001", "020"])], f[f["user_id"] == "000"]


def _state(model):
    return {k: v.detach().clone() for k, v in model.net_.module_.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# the product promise: fit in one city, partial_fit in another, through the pipeline
# --------------------------------------------------------------------------------------------------
def test_sklearn_pipeline_still_has_no_partial_fit():
    """Why the class exists: if scikit-learn adds one, this module can go."""
    assert not hasattr(sklearn_make_pipeline(ShortUserFilter(), MarkovBaseline()), "partial_fit")


def test_raw_fixes_partial_fit_equals_the_manual_two_steps(nyc, fixes):
    import torch

    source, _, _ = nyc
    finetune, held_out = fixes
    pretrained = TrajMoERegressor(**TINY).fit(source)
    manual = copy.deepcopy(pretrained)
    manual.partial_fit(StayPointDetector(**SETTINGS).fit_transform(finetune))
    pipe = make_pipeline(StayPointDetector(**SETTINGS), copy.deepcopy(pretrained))
    assert pipe.partial_fit(finetune) is pipe
    model = pipe[-1]
    assert model.cities_ == ["nyc", "beijing"] == manual.cities_
    assert len(model.net_.history) == len(pretrained.net_.history) + 1     # ONE fine-tuning epoch
    before, after, expected = _state(pretrained), _state(model), _state(manual)
    for name, value in after.items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(after[k], before[k]) for k in before if k in after and after[k].shape == before[k].shape)
    # the detector ran on the fine-tuning fixes (its counts are theirs) and predicts from raw fixes
    assert pipe[0].counts_["n_users"] == 2 and pipe[0].n_staypoints_ > 0
    test_visits = StayPointDetector(**SETTINGS).fit_transform(held_out)
    np.testing.assert_array_equal(pipe.predict(held_out), manual.predict(test_visits))
    ids, scores = pipe[-1].predict_topk(test_visits, k=3)
    ids_manual, scores_manual = manual.predict_topk(test_visits, k=3)
    np.testing.assert_array_equal(np.asarray(ids), np.asarray(ids_manual))
    np.testing.assert_array_equal(scores, scores_manual)


def test_encoder_step_is_extended_once_and_short_users_are_left_out(nyc):
    source, target, _ = nyc
    pipe = make_pipeline(ShortUserFilter(min_visits=20), SpatialSemanticEncoder(), MarkovBaseline(min_stays=2))
    pipe.fit(source).partial_fit(target)
    # the manual path: the same counts from the filtered visits, no encoder step
    keep = ShortUserFilter(min_visits=20)
    manual = MarkovBaseline(min_stays=2).fit(keep.fit_transform(source)).partial_fit(keep.fit_transform(target))
    encoder, model = pipe[1], pipe[-1]
    assert model.encoder_ is encoder and list(encoder.cities_) == ["nyc", "b"]
    assert pipe[0].counts_ == keep.counts_ and keep.counts_["n_users_dropped"] > 0   # filtered in partial_fit
    for city in ("nyc", "b"):
        # visit counts added once (the model extends its encoder; the step only transforms)
        np.testing.assert_array_equal(encoder.cities_[city].visit_counts, manual.encoder_.cities_[city].visit_counts)
    pd.testing.assert_series_equal(model.transitions_, manual.transitions_)
    np.testing.assert_array_equal(pipe.predict(target), manual.predict(target))



def test_rankings_pass_through_to_the_model(nyc):
    source, target, _ = nyc
    pipe = make_pipeline(ShortUserFilter(min_visits=20), MarkovBaseline(min_stays=2)).fit(source)
    manual = MarkovBaseline(min_stays=2).fit(ShortUserFilter(min_visits=20).fit_transform(source))
    seen = ShortUserFilter(min_visits=20).fit_transform(source)      # what the filter passes on
    labels, scores = pipe.predict_topk(source, k=3)
    expected = manual.predict_topk(seen, k=3)
    np.testing.assert_array_equal(labels, expected[0])
    np.testing.assert_array_equal(scores, expected[1])
    pd.testing.assert_series_equal(pipe.target_ranks(source, protocol="last"),
                                   manual.target_ranks(seen, protocol="last"))
    pd.testing.assert_frame_equal(pipe.target_table(source), manual.target_table(seen))
    assert pipe.predict_and_evaluate(source, k=3)["report"] == manual.predict_and_evaluate(seen, k=3)["report"]
    assert metrics.evaluate(pipe, source) == metrics.evaluate(manual, seen)
    with pytest.raises(AttributeError, match="has no attribute 'target_ranks'"):
        Pipeline([("model", DummyRegressor())]).target_ranks

def test_partial_fit_first_initialises_like_fit(nyc):
    source, _, _ = nyc
    pipe = make_pipeline(ShortUserFilter(), SpatialSemanticEncoder(), MarkovBaseline())
    pipe.partial_fit(source)
    fitted = make_pipeline(ShortUserFilter(), SpatialSemanticEncoder(), MarkovBaseline()).fit(source)
    pd.testing.assert_series_equal(pipe[-1].transitions_, fitted[-1].transitions_)
    np.testing.assert_array_equal(pipe.predict(source), fitted.predict(source))


# --------------------------------------------------------------------------------------------------
# parameters of the steps
# --------------------------------------------------------------------------------------------------
def test_pois_are_routed_to_the_model_like_fit_params(nyc):
    source, target, pois = nyc
    pipe = make_pipeline(ShortUserFilter(), MarkovBaseline()).fit(source)
    pipe.partial_fit(target, markovbaseline__pois=pois)
    manual = MarkovBaseline().fit(ShortUserFilter().fit_transform(source))
    manual.partial_fit(ShortUserFilter().fit_transform(target), pois=pois)
    got, expected = pipe[-1].encoder_.cities_["b"], manual.encoder_.cities_["b"]
    assert got.n_locations == expected.n_locations
    without = make_pipeline(ShortUserFilter(), MarkovBaseline()).fit(source).partial_fit(target)
    assert got.n_locations > without[-1].encoder_.cities_["b"].n_locations    # the POIs widen the vocabulary
    np.testing.assert_array_equal(pipe.predict(target), manual.predict(target))


def test_pois_of_a_new_city_reach_the_model_behind_an_encoder_step(nyc):
    # the encoder step only transforms in partial_fit: the model extends it, with the POIs given to it
    source, target, pois = nyc
    pipe = make_pipeline(SpatialSemanticEncoder(), MarkovBaseline()).fit(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroShotWarning)     # city b is registered, not scored zero-shot
        pipe.partial_fit(target, markovbaseline__pois=pois)
    manual = MarkovBaseline().fit(source).partial_fit(target, pois=pois)
    assert pipe[-1].encoder_ is pipe[0]
    assert pipe[0].cities_["b"].n_locations == manual.encoder_.cities_["b"].n_locations
    np.testing.assert_array_equal(pipe.predict(target), manual.predict(target))
    with pytest.raises(ValueError, match=r"give pois to that step .* in a later partial_fit, give them to the estimator"):
        make_pipeline(SpatialSemanticEncoder(), MarkovBaseline()).fit(source, markovbaseline__pois=pois)


@pytest.mark.parametrize("model", [MarkovBaseline(), TrajMoERegressor(**TINY)], ids=["markov", "trajmoe"])
def test_a_failed_partial_fit_leaves_the_encoder_step_the_models(nyc, model, monkeypatch):
    # the model extends the step's encoder with city b, then fails: the network finds no window of
    # min_stays visits in two visits a user; Markov is made to fail when it windows the visits
    source, target, _ = nyc
    pipe = make_pipeline(SpatialSemanticEncoder(), clone(model)).fit(source)
    before, cells = pipe.predict(source), pipe[0].cities_["nyc"].n_locations
    if isinstance(model, MarkovBaseline):
        monkeypatch.setattr(MarkovBaseline, "_windows", lambda self, prep: 1 / 0)
    with pytest.raises((ValueError, ZeroDivisionError)):
        pipe.partial_fit(target.groupby("user_id").head(2))
    monkeypatch.undo()
    # the step is restored in place, so its output is still recognised as the model's encoder's
    assert pipe[-1].encoder_ is pipe[0] and list(pipe[0].cities_) == ["nyc"]
    assert pipe[0].cities_["nyc"].n_locations == cells
    np.testing.assert_array_equal(pipe.predict(source), before)
    pipe.partial_fit(target)                    # and the pipeline fine-tunes on
    assert list(pipe[0].cities_) == ["nyc", "b"]


@pytest.mark.parametrize("model", [MarkovBaseline(), TrajMoERegressor(**TINY)], ids=["markov", "trajmoe"])
@pytest.mark.parametrize("other_city", [False, True], ids=["same city", "another city"])
def test_a_failed_refit_leaves_the_pipeline_as_it_was(nyc, model, other_city, monkeypatch):
    """scikit-learn refits the encoder step before the model; the model's own fit is atomic, but
    it put back the encoder as the step had just been refitted: the old network then predicted
    from the failed call's vocabulary (143 of 240 top-5 rows changed on a small case), or the
    fitted city was gone (UnknownCityError)."""
    source, target, _ = nyc
    pipe = make_pipeline(SpatialSemanticEncoder(), clone(model)).fit(source)
    before, cells = pipe.predict(source), pipe[0].cities_["nyc"].n_locations
    bad = target.groupby("user_id").head(2)         # no window of min_stays visits
    if not other_city:
        bad = bad.assign(city="nyc")
    if isinstance(model, MarkovBaseline):
        monkeypatch.setattr(MarkovBaseline, "_windows", lambda self, prep: 1 / 0)
    with pytest.raises((ValueError, ZeroDivisionError)):
        pipe.fit(bad)
    monkeypatch.undo()
    assert pipe[-1].encoder_ is pipe[0] and list(pipe[0].cities_) == ["nyc"]
    assert pipe[0].cities_["nyc"].n_locations == cells
    np.testing.assert_array_equal(pipe.predict(source), before)


def test_a_cached_encoder_step_gives_the_model_its_visits(nyc, tmp_path):
    """Pipeline(memory=...) stores the encoder's output beside the fitted step: on a cache hit
    the output came back without the visits it carries, and the model refused a plain array."""
    source, _, _ = nyc
    fresh = make_pipeline(SpatialSemanticEncoder(), MarkovBaseline()).fit(source).predict(source)
    for _ in range(2):                                  # a cache miss, then a hit
        pipe = make_pipeline(SpatialSemanticEncoder(), MarkovBaseline(), memory=str(tmp_path)).fit(source)
        assert pipe[-1].encoder_ is pipe[0]
        np.testing.assert_array_equal(pipe.predict(source), fresh)


def test_bad_parameters_raise(nyc):
    source, target, pois = nyc
    pipe = make_pipeline(ShortUserFilter(), SpatialSemanticEncoder(), MarkovBaseline()).fit(source)
    with pytest.raises(ValueError, match=r"does not accept the pois parameter: .*stepname__parameter"):
        pipe.partial_fit(target, pois=pois)
    with pytest.raises(ValueError, match="does not accept the nostep__pois parameter"):
        pipe.partial_fit(target, nostep__pois=pois)
    with pytest.raises(ValueError, match=r"'spatialsemanticencoder' is fitted and partial_fit only transforms"):
        pipe.partial_fit(target, spatialsemanticencoder__pois=pois)
    with sklearn.config_context(enable_metadata_routing=True):
        with pytest.raises(ValueError, match="does not support metadata routing"):
            pipe.partial_fit(target)
    assert pipe[-1].cities_ == ["nyc"]          # nothing was learned by the failed calls


def test_last_step_without_partial_fit_has_no_partial_fit(nyc):
    source, _, _ = nyc
    pipe = make_pipeline(ShortUserFilter(), DummyRegressor())
    assert not hasattr(pipe, "partial_fit")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as excinfo:
        pipe.partial_fit(source)
    assert "its last step 'dummyregressor' (DummyRegressor) has no partial_fit" in str(excinfo.value.__cause__)
    assert not hasattr(Pipeline([("filter", ShortUserFilter()), ("model", "passthrough")]), "partial_fit")


# --------------------------------------------------------------------------------------------------
# still scikit-learn's Pipeline
# --------------------------------------------------------------------------------------------------
def test_clone_params_pickle_and_grid_search(nyc):
    source, target, _ = nyc
    pipe = make_pipeline(ShortUserFilter(min_visits=3), MarkovBaseline(window_days=2), verbose=False)
    reference = sklearn_make_pipeline(ShortUserFilter(min_visits=3), MarkovBaseline(window_days=2))
    assert isinstance(pipe, SklearnPipeline) and type(pipe) is Pipeline
    assert list(pipe.named_steps) == list(reference.named_steps)
    assert pipe.get_params(deep=False).keys() == reference.get_params(deep=False).keys()
    copy_ = clone(pipe)
    assert type(copy_) is Pipeline and copy_.get_params()["markovbaseline__window_days"] == 2
    assert copy_.set_params(markovbaseline__window_days=3) is copy_ and copy_[-1].window_days == 3
    assert pipe[-1].window_days == 2
    pipe.fit(source).partial_fit(target)
    restored = pickle.loads(pickle.dumps(pipe))
    assert type(restored) is Pipeline
    np.testing.assert_array_equal(restored.predict(target), pipe.predict(target))
    search = GridSearchCV(make_pipeline(ShortUserFilter(), MarkovBaseline()),
                          {"markovbaseline__window_days": [2, 3]}, cv=UserKFold(n_splits=2)).fit(source)
    assert type(search.best_estimator_) is Pipeline and hasattr(search.best_estimator_, "partial_fit")


def test_user_warning_filters_are_honoured_and_left_alone(nyc):
    """trajmoe never resets the caller's warning filters: "error" turns its DataWarnings into
    errors, "ignore" silences them, and the filters are the same list after fit and partial_fit."""
    source, target, _ = nyc
    pipe = make_pipeline(ShortUserFilter(min_visits=20), MarkovBaseline())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        with pytest.raises(DataWarning, match="ShortUserFilter"):
            pipe.partial_fit(target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DataWarning)
        filters = list(warnings.filters)
        pipe.fit(source).partial_fit(target)
        pipe.score(target)
        assert warnings.filters == filters
    assert not [w for w in caught if issubclass(w.category, DataWarning)]
