"""The fast scoring paths of the estimators rank as the old dense path did (issue 11).

The old path is re-implemented here as it was: every batch of windows (in window order) scored as
a dense (tokens x cells) matrix by ``_batch_scores``, the top k by a stable argsort of the
negated scores, ranks by :func:`trajmoe.metrics.target_ranks`. The new path batches windows by
length, never holds a dense matrix of a whole batch (neural: a block of tokens; counting
baselines: base rows and sparse entries) and reads top-k and ranks off one pass.
"""

from __future__ import annotations

import copy
import functools
import pickle
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trajmoe.estimators._neural as neural
from trajmoe import (GravityBaseline, HistoryFrequencyBaseline, HistoryGravityBaseline, MarkovBaseline,
                     PopularityBaseline, TrajMoERegressor, metrics)
from trajmoe.cli import load_city
from trajmoe.estimators import _scoring
from trajmoe.estimators._base import scoring_lock
from trajmoe.estimators._scoring import dense_reference
from trajmoe.nn.loss import dense_location_log_probs

TINY = dict(d_model=16, n_layers=1, n_heads=2, max_epochs=1, device="cpu", random_state=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def users_slice(visits, start, stop):
    users = visits["user_id"].unique()
    return visits[visits["user_id"].isin(users[start:stop])]


@pytest.fixture(scope="module")
def cities(data_home):
    out = {}
    for name in ("nyc", "yjmob_A"):
        visits, _ = load_city(name, data_home=data_home)
        out[name] = (users_slice(visits, 0, 60), users_slice(visits, 300, 306 if name == "nyc" else 303))
    return out


def assert_same(model, X, k=10):
    labels, values = model.predict_topk(X, k)
    old_labels, old_values, old_table = dense_reference(model, X, k)
    np.testing.assert_array_equal(labels, old_labels)
    np.testing.assert_array_equal(values, old_values)
    pd.testing.assert_frame_equal(model.target_table(X), old_table)
    pd.testing.assert_frame_equal(model.target_table(X, protocol="last"), dense_reference(model, X, 1, "last")[2])
    both = model.predict_and_evaluate(X, k=k)
    np.testing.assert_array_equal(both["labels"], old_labels)
    pd.testing.assert_frame_equal(both["table"], old_table)
    assert both["report"] == metrics.evaluate(model, X)
    assert not hasattr(model, "_call_memo")          # nothing of a call is kept


COUNTING = [
    PopularityBaseline(),
    MarkovBaseline(),
    HistoryFrequencyBaseline(),
    HistoryFrequencyBaseline(moves_weight=2),
    GravityBaseline(beta=1.9, offset=100.0),
    HistoryGravityBaseline(beta=3.5, offset=2000.0, history_weight=0.44, popularity_weight=0.1, recency_weight=4.4),
    HistoryGravityBaseline(beta=2.0, offset=250.0, history_weight=0.4, popularity_weight=0.0, recency_weight=0.0),
    HistoryGravityBaseline(beta=2.0, offset=250.0, combine="additive", count_weight=1.0, recency_weight=0.5),
    HistoryGravityBaseline(beta=2.0, offset=250.0, history_weight=0.4, popularity_weight=0.1, recency_weight=0.5,
                           moves_weight=4.0),
]


# YJMob city A has 40,000+ cells: the dense reference is slow there, so the gravity rows are
# checked on one mixture
CASES = [("nyc", model) for model in COUNTING] + [("yjmob_A", model) for model in COUNTING[:4] + COUNTING[5:6]]


@pytest.mark.parametrize("city, model", CASES, ids=lambda v: v if isinstance(v, str) else
                         f"{type(v).__name__}-{getattr(v, 'combine', '')}")
def test_counting_baselines_rank_as_the_dense_path(cities, city, model):
    train, test = cities[city]
    assert_same(model.fit(train), test)


def test_history_frequency_hand_checked():
    # cells 0..4 on a line; training visits make cell (4, 0) the most popular, then (3, 0)
    train = pd.DataFrame({"user_id": 1, "day": 0, "slot": range(7), "x": [4, 4, 4, 3, 3, 0, 1], "y": 0})
    model = HistoryFrequencyBaseline(min_stays=1).fit(train)
    # a new user: (1, 0) twice, then (0, 0): history (1, 0) count 2 beats the current cell
    visits = pd.DataFrame({"user_id": 2, "day": 5, "slot": [0, 1, 2, 3], "x": [1, 1, 0, 4], "y": 0})
    labels, _ = model.predict_topk(visits, k=4)
    assert labels[2].tolist() == ["city:1_0", "city:0_0", "city:4_0", "city:3_0"]
    # the truth after the third visit is (4, 0): ranked after the two history cells
    assert model.target_ranks(visits, protocol="last").tolist() == [3]


def test_scoring_never_holds_more_than_a_block(cities, monkeypatch):
    train, test = cities["nyc"]
    model = HistoryGravityBaseline(beta=2.0, offset=250.0, combine="additive", count_weight=1.0,
                                   recency_weight=0.5).fit(train)
    expected = model.target_ranks(test)
    n_cells = model.encoder_.cities_["nyc"].n_locations
    seen = []
    original = _scoring.rank_blocks

    def spy(score_rows, n, n_cells, k=None, truth=None, block=_scoring.SCORE_BLOCK):
        def rows(index):
            seen.append(len(index))
            return score_rows(index)
        return original(rows, n, n_cells, k, truth, block=3 * n_cells)

    monkeypatch.setattr("trajmoe.estimators._base.rank_blocks", spy)
    pd.testing.assert_series_equal(model.target_ranks(test), expected)
    assert seen and max(seen) <= 3


@pytest.fixture(scope="module")
def nyc_networks(cities):
    train, _ = cities["nyc"]
    train = users_slice(train, 0, 30)
    return {copy: TrajMoERegressor(copy_path=copy, **TINY).fit(train) for copy in (False, True)}


@pytest.mark.parametrize("copy_path", [False, True])
def test_neural_scoring_ranks_as_the_dense_path(cities, nyc_networks, copy_path, monkeypatch):
    model = nyc_networks[copy_path]
    _, test = cities["nyc"]
    labels, values = model.predict_topk(test, 10)
    table = model.target_table(test)
    monkeypatch.setattr(neural, "location_log_probs", dense_location_log_probs)
    old_values = dense_reference(model, test, 10)[1]
    # the rankings order the dense scores they replace (ranking_scores: the logits without the
    # copy path, whose log-softmax could round two of them into a tie)
    monkeypatch.setattr(neural, "location_log_probs", functools.partial(dense_location_log_probs, normalise=False))
    old_labels, _, old_table = dense_reference(model, test, 10)
    # batches of other windows (sorted by length) may move float32 scores by an ulp: rankings hold
    np.testing.assert_array_equal(labels, old_labels)
    np.testing.assert_array_equal(model.predict(test), labels[:, 0])
    # log-probabilities are logits less their log-sum-exp: logits of tens (the history prior adds 4
    # a move of the window) carry float32 ulps of a few 1e-6, which the subtraction keeps
    np.testing.assert_allclose(values, old_values, rtol=1e-5, atol=5e-5)
    pd.testing.assert_frame_equal(table, old_table)
    both = model.predict_and_evaluate(test, k=10)
    np.testing.assert_array_equal(both["labels"], labels)
    pd.testing.assert_frame_equal(both["table"], table)


def test_neural_scoring_in_blocks_of_a_few_tokens(cities, nyc_networks, monkeypatch):
    model = nyc_networks[False]
    _, test = cities["nyc"]
    labels, values = model.predict_topk(test, 5)
    ranks = model.target_ranks(test)
    monkeypatch.setattr(_scoring, "SCORE_BLOCK", 2 * model.encoder_.cities_["nyc"].n_locations + 1)
    np.testing.assert_array_equal(model.predict_topk(test, 5)[0], labels)
    pd.testing.assert_series_equal(model.target_ranks(test), ranks)


def test_the_frame_is_checked_once_per_call(cities, nyc_networks, monkeypatch):
    # the cells outside the fitted region and the windows read one validated frame (issue 11: no
    # wasted passes; validation was 11 % of a NYC predict call when it ran twice)
    import trajmoe.encoder

    model = nyc_networks[False]
    _, test = cities["nyc"]
    labels, ranks = model.predict(test), model.target_ranks(test)
    calls = []

    def counting(real):
        def check(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)
        return check

    # every estimator checks through one of them (validate_positional: validated_visits)
    for name in ("validate_visits", "validated_visits"):
        monkeypatch.setattr(trajmoe.encoder, name, counting(getattr(trajmoe.encoder, name)))
    for call in (model.predict, model.target_ranks, lambda X: model.predict_topk(X, 3), model.predict_and_evaluate):
        calls.clear()
        call(test)
        assert len(calls) == 1, call
    np.testing.assert_array_equal(model.predict(test), labels)
    pd.testing.assert_series_equal(model.target_ranks(test), ranks)


def test_city_encoding_is_kept_until_the_network_changes(cities, nyc_networks, monkeypatch):
    model = nyc_networks[False]
    _, test = cities["nyc"]
    module = model.net_.module_
    calls = []
    original = type(module).city_encoding

    def counting(self, city):
        calls.append(city)
        return original(self, city)

    monkeypatch.setattr(type(module), "city_encoding", counting)
    model.__dict__.pop("_kept_state", None)
    labels, ranks = model.predict(test), model.target_ranks(test)
    model.transform(test)
    model.predict_topk(test, 3)
    assert len(calls) == 1 and not hasattr(model, "_call_memo")      # once for all four calls
    # the location embeddings a caller gets are a copy: writing to them changes nothing kept
    model.location_embeddings("nyc")[:] = 0
    np.testing.assert_array_equal(model.predict(test), labels)
    assert len(calls) == 1
    # an in-place edit of a weight (its version counter moves) drops what was kept
    weight = module.tower.proj.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(-1000.0)               # the learned term negated and made to dominate: another ranking
    try:
        edited = model.predict(test)
        assert len(calls) == 2 and (edited != labels).any()      # a stale tower would give labels
        unkept = pickle.loads(pickle.dumps(model))          # nothing kept travels with a pickle
        assert "_kept_state" not in vars(unkept)
        np.testing.assert_array_equal(edited, unkept.predict(test))
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    np.testing.assert_array_equal(model.predict(test), labels)
    assert len(calls) == 4                 # the pickled copy computed its own
    pd.testing.assert_series_equal(model.target_ranks(test), ranks)
    assert len(calls) == 4
    # fine-tuning drops it (fit and partial_fit): the next call computes the tuned network's
    tuned = pickle.loads(pickle.dumps(model))
    tuned.predict(test)
    tuned.partial_fit(cities["nyc"][0].iloc[:300])
    assert "_kept_state" not in vars(tuned)
    calls.clear()
    tuned.predict(test)
    assert len(calls) == 1


def test_nothing_is_kept_for_a_changed_structure_inference_tensors_or_a_copy(cities, nyc_networks):
    model = nyc_networks[False]
    _, test = cities["nyc"]
    ranks = model.target_ranks(test)
    assert "_kept_state" in vars(model)
    # copies leave what was kept out
    assert "_kept_state" not in vars(copy.deepcopy(model))
    # a replaced submodule (without parameters of its own) is another network
    edited = copy.deepcopy(model)
    edited.target_ranks(test)
    edited.net_.module_.tower.deep[1] = torch.nn.ReLU()
    reference = copy.deepcopy(edited).target_ranks(test)
    assert (reference != ranks).any()                      # a stale tower would give the old ranks
    pd.testing.assert_series_equal(edited.target_ranks(test), reference)
    # a model loaded under inference mode holds inference tensors, which have no version counter:
    # nothing is kept beyond a call, so a later load_state_dict is seen
    other = TrajMoERegressor(copy_path=False, **{**TINY, "random_state": 1}).fit(users_slice(cities["nyc"][0], 0, 30))
    blob = pickle.dumps(model)
    with torch.inference_mode():
        loaded = pickle.loads(blob)
        assert next(loaded.net_.module_.parameters()).is_inference()
        pd.testing.assert_series_equal(loaded.target_ranks(test), ranks)
        assert "_kept_state" not in vars(loaded)
        loaded.net_.module_.load_state_dict(other.net_.module_.state_dict())
        pd.testing.assert_series_equal(loaded.target_ranks(test), other.target_ranks(test))


def test_location_embeddings_wait_for_a_scoring_call_of_another_thread(nyc_networks):
    # another thread's call may have swapped in a city's extended tables: location_embeddings
    # takes the model's scoring lock, as predict does
    model = nyc_networks[False]
    lock = scoring_lock(model)
    got = []
    worker = threading.Thread(target=lambda: got.append(model.location_embeddings("nyc")))
    with lock:
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not got
    worker.join(30)
    assert got and got[0].shape == (model.encoder_.cities_["nyc"].n_locations, 16)


def test_a_forward_with_the_city_encoding_given_is_the_forward_that_computes_it(nyc_networks):
    module = nyc_networks[False].net_.module_
    original = type(module).city_encoding
    batch = {k: torch.as_tensor(np.zeros((1, 3), np.int64)) for k in ("location", "slot", "gap")}
    batch["dow"] = torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        plain = module(**batch, city=0)
        cached = module(**batch, city=0, city_encoding=original(module, 0))
    for key, value in plain.items():
        if torch.is_tensor(value):
            assert torch.equal(value, cached[key]), key
    with pytest.raises(ValueError, match="city_encoding"):
        module(**batch, city=0, city_encoding={**original(module, 0), "index": 1})


@pytest.mark.parametrize("bad, match", [(dict(k=0), "k must be"), (dict(k=True), "k must be"),
                                        (dict(protocol="first"), "protocol")])
def test_predict_and_evaluate_checks_its_arguments(cities, bad, match):
    train, test = cities["nyc"]
    model = PopularityBaseline().fit(train)
    with pytest.raises(ValueError, match=match):
        model.predict_and_evaluate(test, **bad)


# the gravity rows read off the table of grid offsets equal those computed from the centroids
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), beta=st.floats(0.0, 6.0), offset=st.floats(5.0, 3000.0),
       cell_size=st.sampled_from([500.0, 250.0, 333.3]))
def test_gravity_rows_from_the_offset_table_equal_the_direct_rows(seed, beta, offset, cell_size):
    from trajmoe.estimators._counting import _decay_table, _gravity, _gravity_from_table
    rng = np.random.default_rng(seed)
    w, h = rng.integers(1, 12, 2)
    box = np.stack(np.meshgrid(np.arange(w), np.arange(h), indexing="ij"), -1).reshape(-1, 2) + rng.integers(-5, 5, 2)
    cells = box[np.sort(rng.choice(len(box), rng.integers(1, len(box) + 1), replace=False))]
    # popularity with ties (unvisited cells share a share)
    log_pop = np.log((rng.integers(0, 3, len(cells)) + 1.0) / (len(cells) + 10.0))
    query = rng.integers(cells.min(axis=0), cells.max(axis=0) + 1, (7, 2))      # in the cells' box
    centroid = lambda c: (c + 0.5) * cell_size      # noqa: E731  (a projected grid's centroids)
    direct = _gravity(log_pop, centroid(cells), centroid(query), beta, offset)
    fast = np.empty_like(direct)
    table = _decay_table(cells, cell_size, beta, offset)
    assert not _gravity_from_table(log_pop, table, query, fast).any()
    np.testing.assert_allclose(fast, direct, rtol=1e-12, atol=1e-12)
    if cell_size != 333.3:     # exact centroids: the same order and pessimistic ranks of every cell
        np.testing.assert_array_equal(np.argsort(-fast, axis=1, kind="stable"),
                                      np.argsort(-direct, axis=1, kind="stable"))
        np.testing.assert_array_equal((fast[:, None, :] >= fast[:, :, None]).sum(-1),
                                      (direct[:, None, :] >= direct[:, :, None]).sum(-1))
    # rows computed one at a time or in one block are the same floats
    for i in range(len(query)):
        row = np.empty((1, len(cells)))
        _gravity_from_table(log_pop, table, query[i:i + 1], row)
        np.testing.assert_array_equal(row[0], fast[i])


def test_gravity_rows_outside_the_box_take_the_direct_path(cities, monkeypatch):
    from trajmoe.encoder import cell_keys
    from trajmoe.estimators import _counting
    train, _ = cities["yjmob_A"]
    model = HistoryGravityBaseline(beta=2.0, offset=250.0, history_weight=0.4, popularity_weight=0.2,
                                   recency_weight=1.0).fit(train)
    direct = []
    original = _counting._gravity
    monkeypatch.setattr(_counting, "_gravity", lambda *a, **k: direct.append(len(a[2])) or original(*a, **k))
    # visits 50,000 cells away join the vocabulary (unseen cells): the box is too large for a table
    far = train[train["user_id"] == train["user_id"].iloc[0]].head(8).copy()
    far.loc[far.index[2:4], "x"] += 50_000
    far["user_id"] = -1
    assert_same(model, far)
    assert direct
    # rows of unknown positions (-1) and of cells outside the box, among rows read off the table
    table = model.encoder_.cities_["yjmob_A"]
    cells = table.cells[[0, 5, len(table.cells) - 1]]
    keys = np.r_[-1, cell_keys(cells[:, 0], cells[:, 1]), cell_keys([-400], [7])]
    direct.clear()
    rows = model._gravity_rows("yjmob_A", keys)
    assert direct == [2]                      # the unknown position and the far cell
    query = np.full((len(keys), 2), np.nan)
    query[1:] = _counting._centroids(table, np.vstack([cells, [[-400, 7]]]))
    expected = original(_counting._log_popularity(table.visit_counts), _counting._centroids(table, table.cells),
                        query, model.beta_, model.offset_)
    np.testing.assert_allclose(rows, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # the old getters, deprecated in today's torch
def test_the_autocast_state_is_read_on_torch_before_2_4(monkeypatch):
    # the key of what is kept holds the autocast state; torch < 2.4 has no per-device-type getters
    current = neural._autocast_state("cpu")
    assert current == (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
    monkeypatch.delattr(torch, "get_autocast_dtype")
    assert neural._autocast_state("cpu") == current
