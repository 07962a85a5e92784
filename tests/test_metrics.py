"""Tests of trajmoe.metrics: hand-computed ranks, metric values, properties and sklearn scorers."""

from __future__ import annotations

import math
import pickle
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import rankdata
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score

from trajmoe.metrics import (
    OOV_RANK,
    acc_at_k_scorer,
    accuracy_at_k,
    evaluate,
    get_scorer,
    mean_reciprocal_rank,
    mrr_scorer,
    ndcg_at_k,
    ndcg_scorer,
    ranking_report,
    target_ranks,
)

# --------------------------------------------------------------------------------------------------
# target_ranks
# --------------------------------------------------------------------------------------------------
# Hand-checked, pessimistic ties: rank = 1 + #(s > s_t) + #(s == s_t and id != t)
HAND_SCORES = np.array(
    [
        [0.1, 0.9, 0.9, 0.0],  # t=2: nothing greater, tie with id 1 -> 2
        [0.1, 0.9, 0.9, 0.0],  # t=1: nothing greater, tie with id 2 (after it, still counts) -> 2
        [0.5, 0.5, 0.5, 0.5],  # t=3: all tie, ids 0,1,2 -> 4
        [0.5, 0.5, 0.5, 0.5],  # t=0: all tie, ids 1,2,3 -> 4 (chance level, never 1)
        [3.0, 1.0, 2.0, 2.0],  # t=3: id 0 greater, id 2 ties -> 3
        [3.0, 1.0, 2.0, 2.0],  # t=2: id 0 greater, id 3 ties -> 3
        [0.0, 0.0, 1.0, 0.0],  # t=-1: out of vocabulary -> OOV_RANK
        [-np.inf, 0.2, -np.inf, 0.1],  # t=1: strictly top -> 1
        [-np.inf, 0.2, -np.inf, 0.1],  # t=2: -inf, beaten by ids 1, 3, tie id 0 -> 4
        [-np.inf, 0.2, -np.inf, 0.1],  # t=0: -inf, beaten by ids 1, 3, tie id 2 -> 4
    ]
)
HAND_TARGETS = np.array([2, 1, 3, 0, 3, 2, -1, 1, 2, 0])
HAND_RANKS = [2, 2, 4, 4, 3, 3, OOV_RANK, 1, 4, 4]


def test_target_ranks_hand_checked():
    ranks = target_ranks(HAND_SCORES, HAND_TARGETS)
    assert ranks.dtype == np.int64
    assert ranks.tolist() == HAND_RANKS


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])
def test_target_ranks_chunking_does_not_change_result(chunk_size):
    ranks = target_ranks(HAND_SCORES, HAND_TARGETS.tolist(), chunk_size=chunk_size)
    assert ranks.tolist() == HAND_RANKS


def test_target_ranks_torch_input():
    ranks = target_ranks(torch.tensor(HAND_SCORES), torch.tensor(HAND_TARGETS))
    assert isinstance(ranks, np.ndarray) and ranks.dtype == np.int64
    assert ranks.tolist() == HAND_RANKS
    # torch scores with numpy targets, float32, chunked, requires_grad
    s = torch.tensor(HAND_SCORES, dtype=torch.float32, requires_grad=True)
    assert target_ranks(s, HAND_TARGETS, chunk_size=2).tolist() == HAND_RANKS
    # numpy scores with torch targets
    assert target_ranks(HAND_SCORES, torch.tensor(HAND_TARGETS)).tolist() == HAND_RANKS
    # bfloat16 takes the pure-torch path (the one used for CUDA tensors); the hand values keep
    # their order and ties in bfloat16
    bf = torch.tensor(HAND_SCORES).to(torch.bfloat16)
    for chunk in (None, 1, 3):
        assert target_ranks(bf, torch.tensor(HAND_TARGETS), chunk_size=chunk).tolist() == HAND_RANKS
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.tensor([[float("nan"), 1.0]]).to(torch.bfloat16), [0])
    with pytest.raises(ValueError, match="integer"):
        target_ranks(bf, torch.tensor(HAND_TARGETS, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"0\.\.3"):
        target_ranks(bf, torch.tensor([0, 1, 2, 3, 4, 0, 0, 0, 0, 0]))


@pytest.mark.parametrize("n_cand", [1, 2, 10, 1000])
def test_constant_scorer_is_chance_level(n_cand):
    # every cell tied: each target is ranked last, never first
    scores = np.zeros((3, n_cand))
    targets = [0, n_cand - 1, n_cand // 2]
    ranks = target_ranks(scores, targets)
    assert ranks.tolist() == [n_cand] * 3
    assert target_ranks(torch.tensor(scores).to(torch.bfloat16), targets).tolist() == [n_cand] * 3
    assert accuracy_at_k(ranks, 1) == (1.0 if n_cand == 1 else 0.0)
    assert mean_reciprocal_rank(ranks) == pytest.approx(1 / n_cand)
    assert ranking_report(ranks, ks=(1, 10))["acc@10"] == (1.0 if n_cand <= 10 else 0.0)


def test_target_ranks_brief_example():
    assert target_ranks(np.zeros((3, 10)), [0, 0, 0]).tolist() == [10, 10, 10]
    # the two tied top cells both rank 2, whichever of them is the truth
    assert target_ranks(np.array([[0.1, 0.9, 0.9, 0.0]] * 2), [2, 1]).tolist() == [2, 2]


def test_rank_one_iff_strict_maximum_and_acc1_at_most_predict_accuracy():
    # rank 1 <=> the target's score is strictly the highest of its row; argmax (first maximum,
    # what predict returns) can hit a tied target that is not ranked 1
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(200, 6)).astype(float)
    targets = rng.integers(0, 6, size=200)
    ranks = target_ranks(scores, targets)
    st_ = scores[np.arange(200), targets]
    strictly_top = (scores < st_[:, None]).sum(1) == 5
    np.testing.assert_array_equal(ranks == 1, strictly_top)
    argmax_hit = scores.argmax(1) == targets
    assert not (ranks == 1)[~argmax_hit].any()           # rank 1 implies a hit of predict
    assert (argmax_hit & (ranks > 1)).any()              # ties make some hits of predict rank > 1
    assert accuracy_at_k(ranks, 1) < argmax_hit.mean()


def _reference_ranks(scores, targets):
    """Pessimistic ranks by sorting: score descending, the target after every cell tied with it."""
    out = []
    for s, t in zip(scores, targets):
        if t < 0:
            out.append(OOV_RANK)
            continue
        order = np.lexsort((np.arange(len(s)) == t, -s))  # score desc, target last among ties
        out.append(int(np.flatnonzero(order == t)[0]) + 1)
    return out


def test_target_ranks_matches_sorting_reference():
    rng = np.random.default_rng(1)
    scores = rng.integers(-2, 3, size=(300, 17)).astype(np.float32)
    targets = rng.integers(-1, 17, size=300)
    assert target_ranks(scores, targets, chunk_size=7).tolist() == _reference_ranks(scores, targets)


def test_target_ranks_empty_and_no_candidates():
    assert target_ranks(np.zeros((0, 5)), np.zeros(0, dtype=int)).shape == (0,)
    assert target_ranks(np.zeros((2, 0)), [-1, -1]).tolist() == [OOV_RANK, OOV_RANK]
    with pytest.raises(ValueError, match=r"targets must be -1 \(out of vocabulary\): scores has no column"):
        target_ranks(np.zeros((2, 0)), [0, -1])


def test_target_ranks_chunks_bound_memory():
    rng = np.random.default_rng(2)
    n, n_cand = 2000, 5000
    scores = rng.standard_normal((n, n_cand))  # 80 MB
    targets = rng.integers(0, n_cand, size=n)
    tracemalloc.start()
    ranks = target_ranks(scores, targets, chunk_size=50)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # one chunk's temporaries are ~50 * 5000 bytes per boolean mask; far below one [n, N] bool
    assert peak < n * n_cand / 4
    sub = slice(0, 40)
    assert ranks[sub].tolist() == _reference_ranks(scores[sub], targets[sub])


@pytest.mark.parametrize(
    "scores, targets, match",
    [
        (np.zeros(4), [0], "2-D"),
        (np.zeros((2, 4)), [0], "1-D with one id per row"),
        (np.zeros((2, 4)), [0, 4], r"0\.\.3"),
        (np.zeros((2, 4)), [0, -2], r"0\.\.3"),
        (np.zeros((2, 4)), [0.0, 1.0], "integer"),
        (np.array([[np.nan, 1.0]]), [0], "NaN"),
        (np.zeros((2, 4)), [True, False], "integer"),             # a boolean is not a location id
        # a uint64 id beyond int64 wrapped to -1 and was scored as out of vocabulary
        (np.zeros((2, 4)), np.array([2**64 - 1, 0], np.uint64), r"0\.\.3 .*18446744073709551615"),
        # nullable integers with a missing id: the rows, not "dtype float64"
        (np.zeros((2, 4)), pd.array([1, None], dtype="Int64"), r"1 missing id\(s\) at rows \[1\]"),
        (np.zeros((2, 4)) + 1j, [0, 1], "scores must be real numbers, got dtype complex128"),
        (np.array([[1, "a"]], dtype=object), [0], "scores must be real numbers, got dtype object"),
    ],
)
def test_target_ranks_errors(scores, targets, match):
    with pytest.raises(ValueError, match=match):
        target_ranks(scores, targets)


def test_target_ranks_take_nullable_and_pandas_integer_ids():
    scores = np.array([[0.1, 0.9, 0.9, 0.0], [0.5, 0.5, 0.5, 0.5]])
    expected = target_ranks(scores, np.array([1, 2])).tolist()
    assert expected == [2, 4]
    for ids in (pd.array([1, 2], dtype="Int64"), pd.Series([1, 2], dtype="Int64"), pd.Series([1, 2]),
                pd.Series([1, 2], dtype="category"), np.array([1, 2], np.uint64)):
        assert target_ranks(scores, ids).tolist() == expected


def test_ranking_report_ks_must_be_a_sequence_of_cut_offs():
    """ks=None was a TypeError ('NoneType' object is not iterable) and a dict was read by its keys."""
    for bad in (None, {1: 2}, "5", 2.5):
        with pytest.raises(ValueError, match=r"ks must be a sequence of cut-offs|\bk\b"):
            ranking_report([1, 2], ks=bad)
    assert ranking_report([1, 2], ks=[5, 1])["acc@5"] == 1.0


def test_target_ranks_nan_anywhere_in_a_ranked_row_is_an_error_and_bad_chunk():
    # a NaN elsewhere in the row compares neither above nor below the target: counted as below, a
    # row of NaN but the target ranked it first (a diverged model scored well)
    with pytest.raises(ValueError, match=r"scores contain NaN in 1 row with a target \(e\.g\. rows \[1\]"):
        target_ranks(np.array([[0.0, 1.0, 2.0], [np.nan, 1.0, 2.0]]), [1, 1])
    with pytest.raises(ValueError, match=r"NaN in 2 rows"):
        target_ranks(np.full((2, 3), np.nan), [0, 1], chunk_size=5)
    # an out-of-vocabulary target is not ranked: its row may hold NaN
    assert target_ranks(np.array([[np.nan, 1.0, 2.0]]), [-1]).tolist() == [OOV_RANK]
    with pytest.raises(ValueError, match="chunk_size"):
        target_ranks(np.zeros((2, 3)), [0, 1], chunk_size=0)


# --------------------------------------------------------------------------------------------------
# metrics on ranks (hand-computed)
# --------------------------------------------------------------------------------------------------
RANKS = [1, 2, 4, OOV_RANK]


def test_accuracy_hand_computed():
    assert accuracy_at_k(RANKS, 1) == 0.25
    assert accuracy_at_k(RANKS, 2) == 0.5
    assert accuracy_at_k(RANKS, 3) == 0.5
    assert accuracy_at_k(RANKS, 4) == 0.75
    assert accuracy_at_k(RANKS, 10) == 0.75  # OOV is a miss for every k


def test_mrr_hand_computed():
    assert mean_reciprocal_rank(RANKS) == pytest.approx((1 + 0.5 + 0.25 + 0) / 4)
    assert mean_reciprocal_rank([2, 2]) == 0.5


def test_ndcg_hand_computed():
    expected10 = (1 + 1 / math.log2(3) + 1 / math.log2(5) + 0) / 4
    assert ndcg_at_k(RANKS, 10) == pytest.approx(expected10)
    assert ndcg_at_k(RANKS, 10) == pytest.approx(0.515402, abs=1e-6)
    assert ndcg_at_k(RANKS, 3) == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert ndcg_at_k(RANKS, 1) == 0.25


def test_oov_as_inf_and_series_and_torch():
    as_float = np.array([1, 2, 4, np.inf])
    assert mean_reciprocal_rank(as_float) == pytest.approx(0.4375)
    assert accuracy_at_k(pd.Series(RANKS, index=[10, 11, 12, 13]), 1) == 0.25
    assert ndcg_at_k(torch.tensor(RANKS), 10) == pytest.approx(ndcg_at_k(RANKS, 10))


def test_ranking_report_hand_computed():
    rep = ranking_report(RANKS)
    assert list(rep) == [
        "acc@1", "acc@3", "acc@5", "acc@10", "mrr",
        "ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "n_targets",
    ]  # fmt: skip
    assert rep["acc@1"] == 0.25 and rep["acc@3"] == 0.5 and rep["acc@5"] == 0.75
    assert rep["acc@10"] == 0.75
    assert rep["mrr"] == pytest.approx(0.4375)
    assert rep["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(5)) / 4)
    assert rep["n_targets"] == 4 and isinstance(rep["n_targets"], int)
    assert list(ranking_report(RANKS, ks=(5, 2))) == ["acc@2", "acc@5", "mrr", "ndcg@2", "ndcg@5", "n_targets"]


@pytest.mark.parametrize(
    "ranks, match",
    [
        ([], "empty"),
        ([0, 1], ">= 1"),
        ([1.5], "whole"),
        ([1, np.nan], "NaN"),
        ([[1, 2]], "1-D"),
        (["a"], "integers"),
    ],
)
def test_metric_input_errors(ranks, match):
    with pytest.raises(ValueError, match=match):
        accuracy_at_k(ranks, 1)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ndcg_at_k([1], k)


# --------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------
rank_lists = st.lists(
    st.one_of(st.integers(1, 50), st.just(OOV_RANK)), min_size=1, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(rank_lists)
def test_metric_properties(ranks):
    accs = [accuracy_at_k(ranks, k) for k in range(1, 12)]
    assert all(a <= b for a, b in zip(accs, accs[1:]))  # monotone in k
    ndcgs = [ndcg_at_k(ranks, k) for k in range(1, 12)]
    assert all(a <= b + 1e-12 for a, b in zip(ndcgs, ndcgs[1:]))
    mrr = mean_reciprocal_rank(ranks)
    assert 0.0 <= mrr <= 1.0
    # single relevant item: acc@1 == ndcg@1 and acc@1 <= mrr <= acc@k + 1/(k+1)
    assert ndcgs[0] == pytest.approx(accs[0])
    assert accs[0] - 1e-12 <= mrr <= accs[9] + 1 / 11 + 1e-12
    assert all(0 <= x <= 1 for x in accs + ndcgs)


score_matrices = st.integers(1, 8).flatmap(
    lambda n_cand: st.tuples(
        hnp.arrays(np.float64, st.tuples(st.integers(1, 10), st.just(n_cand)), elements=st.integers(-3, 3)),
        st.integers(0, 2**31 - 1),
    )
)


@settings(max_examples=80, deadline=None)
@given(score_matrices)
def test_rank_range_and_reference(data):
    scores, seed = data
    n, n_cand = scores.shape
    targets = np.random.default_rng(seed).integers(-1, n_cand, size=n)
    ranks = target_ranks(scores, targets, chunk_size=3)
    valid = targets >= 0
    assert ((ranks[valid] >= 1) & (ranks[valid] <= n_cand)).all()
    assert (ranks[~valid] == OOV_RANK).all()
    assert ranks.tolist() == _reference_ranks(scores, targets)
    # ranks of all N cells of one row are the "max" ranks of -score: a group of m tied cells
    # that starts at position p all get p + m - 1 (a permutation of 1..N only without ties)
    all_ranks = target_ranks(np.repeat(scores[:1], n_cand, 0), np.arange(n_cand))
    np.testing.assert_array_equal(all_ranks, rankdata(-scores[0], method="max").astype(np.int64))
    assert all_ranks.max() == n_cand


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(0, 2**31 - 1), st.booleans())
def test_rank_invariant_under_id_permutation(n_cand, n, seed, ties):
    # pessimistic ties do not depend on how cells are numbered, with or without ties
    rng = np.random.default_rng(seed)
    if ties:
        scores = rng.integers(0, 3, size=(n, n_cand)).astype(float)
    else:
        scores = np.stack([rng.permutation(n_cand) for _ in range(n)]).astype(float)
    targets = rng.integers(0, n_cand, size=n)
    perm = rng.permutation(n_cand)  # new id of old id j is perm[j]
    permuted = np.empty_like(scores)
    permuted[:, perm] = scores
    np.testing.assert_array_equal(
        target_ranks(scores, targets), target_ranks(permuted, perm[targets])
    )


# scores with many ties (small integers, exact in bfloat16), some masked cells (-inf)
tied_matrices = st.integers(1, 9).flatmap(
    lambda n_cand: st.tuples(
        hnp.arrays(
            np.float64,
            st.tuples(st.integers(1, 12), st.just(n_cand)),
            elements=st.one_of(st.integers(-3, 3).map(float), st.just(-np.inf)),
        ),
        st.integers(0, 2**31 - 1),
        st.one_of(st.none(), st.integers(1, 5)),
    )
)


@settings(max_examples=80, deadline=None)
@given(tied_matrices)
def test_torch_and_numpy_paths_agree(data):
    # bfloat16 tensors take the pure-torch path (the one CUDA tensors take), float64 arrays the
    # numpy path: same pessimistic ranks, OOV included, for any chunking
    scores, seed, chunk = data
    n, n_cand = scores.shape
    targets = np.random.default_rng(seed).integers(-1, n_cand, size=n)
    numpy_ranks = target_ranks(scores, targets, chunk_size=chunk)
    torch_ranks = target_ranks(torch.tensor(scores).to(torch.bfloat16), torch.tensor(targets), chunk_size=chunk)
    assert torch_ranks.dtype == numpy_ranks.dtype == np.int64
    np.testing.assert_array_equal(torch_ranks, numpy_ranks)
    assert numpy_ranks.tolist() == _reference_ranks(scores, targets)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_hand_checked():
    s = torch.tensor(HAND_SCORES, dtype=torch.float32, device="cuda")
    assert target_ranks(s, torch.tensor(HAND_TARGETS, device="cuda"), chunk_size=3).tolist() == HAND_RANKS
    assert target_ranks(torch.zeros(3, 10, device="cuda"), [0, 0, 0]).tolist() == [10, 10, 10]


# --------------------------------------------------------------------------------------------------
# evaluate and scorers
# --------------------------------------------------------------------------------------------------
class FixedRanks:
    """Tiny fake estimator returning fixed ranks (and the last one for protocol='last')."""

    def __init__(self, ranks):
        self.ranks = ranks
        self.calls = []

    def target_ranks(self, X, protocol="all"):
        self.calls.append(protocol)
        s = pd.Series(self.ranks, index=np.arange(len(self.ranks)) * 10)
        return s if protocol == "all" else s.iloc[-1:]


def test_evaluate_with_fake_estimator():
    est = FixedRanks(RANKS)
    rep = evaluate(est, pd.DataFrame({"user_id": [1]}), protocol="all", ks=(1, 10))
    assert rep == {
        "acc@1": 0.25,
        "acc@10": 0.75,
        "mrr": pytest.approx(0.4375),
        "ndcg@1": 0.25,
        "ndcg@10": pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(5)) / 4),
        "n_targets": 4,
    }
    last = evaluate(FixedRanks([3, 1]), None, protocol="last")
    assert last["acc@1"] == 1.0 and last["n_targets"] == 1
    with pytest.raises(ValueError, match="protocol"):
        evaluate(est, None, protocol="first")
    with pytest.raises(TypeError, match="target_ranks"):
        evaluate(object(), None)


def test_scorers_with_fake_estimator():
    est = FixedRanks(RANKS)
    assert acc_at_k_scorer(1)(est, None) == 0.25
    assert acc_at_k_scorer(5)(est, None, None) == 0.75
    assert mrr_scorer(est, None) == pytest.approx(0.4375)
    assert ndcg_scorer(10)(est, None) == pytest.approx(0.515402, abs=1e-6)
    assert get_scorer("acc@3")(est, None) == 0.5
    assert get_scorer("NDCG@1")(est, None) == 0.25
    assert get_scorer("mrr", protocol="last")(est, None) == 0.0  # last rank is OOV
    assert est.calls[-1] == "last" and est.calls[0] == "all"
    assert get_scorer("acc@3") == acc_at_k_scorer(3)
    # the registered "_last" names are get_scorer's names too
    assert get_scorer("mrr_last") == get_scorer("MRR", protocol="last")
    assert get_scorer("acc@1_last")(est, None) == 0.0 and est.calls[-1] == "last"
    assert pickle.loads(pickle.dumps(get_scorer("ndcg@10")))(est, None) == pytest.approx(0.515402, abs=1e-6)


@pytest.mark.parametrize("name", ["acc", "acc@0", "hit@1", "ndcg", "mrr@3", 3])
def test_get_scorer_unknown_names(name):
    with pytest.raises(ValueError, match="metric"):
        get_scorer(name)


def test_scorer_bad_protocol():
    with pytest.raises(ValueError, match="protocol"):
        acc_at_k_scorer(1, protocol="final")


class ColumnRanker(BaseEstimator):
    """Fake sklearn estimator: the rank of each visit is stored in the column 'rank'."""

    def __init__(self, shift=0):
        self.shift = shift

    def fit(self, X, y=None):
        self.n_fit_ = len(X)
        return self

    def target_ranks(self, X, protocol="all"):
        ranks = X["rank"] + self.shift
        if protocol == "last":
            ranks = ranks.groupby(X["user_id"]).tail(1)
        return ranks


def _two_user_frame():
    return pd.DataFrame(
        {
            "user_id": ["u1"] * 4 + ["u2"] * 3,
            "rank": [1, 2, 1, 1, 3, 1, 5],  # u1: acc@1 .75 ; u2: acc@1 1/3
        },
        index=[7, 3, 5, 1, 2, 4, 6],
    )


def test_scorer_in_cross_val_score():
    X = _two_user_frame()
    scores = cross_val_score(
        ColumnRanker(), X, groups=X["user_id"], cv=GroupKFold(n_splits=2), scoring=get_scorer("acc@1")
    )
    assert sorted(scores.tolist()) == pytest.approx([1 / 3, 0.75])
    mrr = cross_val_score(
        ColumnRanker(), X, groups=X["user_id"], cv=GroupKFold(n_splits=2), scoring=mrr_scorer
    )
    assert sorted(mrr.tolist()) == pytest.approx([(1 / 3 + 1 + 1 / 5) / 3, (1 + 0.5 + 1 + 1) / 4])
    last = cross_val_score(
        ColumnRanker(),
        X,
        groups=X["user_id"],
        cv=GroupKFold(n_splits=2),
        scoring=get_scorer("acc@1", protocol="last"),
    )
    assert sorted(last.tolist()) == [0.0, 1.0]  # u2 last rank 5, u1 last rank 1


def test_scorer_in_grid_search():
    X = _two_user_frame()
    gs = GridSearchCV(
        ColumnRanker(),
        {"shift": [0, 1]},
        scoring={"acc@1": get_scorer("acc@1"), "mrr": mrr_scorer},
        refit="mrr",
        cv=GroupKFold(n_splits=2),
    )
    gs.fit(X, groups=X["user_id"])
    assert gs.best_params_ == {"shift": 0}
    assert gs.cv_results_["mean_test_acc@1"].tolist() == pytest.approx([(0.75 + 1 / 3) / 2, 0.0])


# --------------------------------------------------------------------------------------------------
# return / explore split and out-of-vocabulary share
# --------------------------------------------------------------------------------------------------
KIND = ["return", "explore", "return", "explore"]  # returns: ranks 1, 4; explorations: 2, OOV
OOV = [False, False, False, True]


def test_ranking_report_split_hand_computed():
    rep = ranking_report(RANKS, ks=(1, 3, 5), kind=KIND, oov=OOV)
    assert list(rep) == [
        "acc@1", "acc@3", "acc@5", "mrr", "ndcg@1", "ndcg@3", "ndcg@5", "n_targets",
        "return_share", "explore_share",
        "acc@1_return", "acc@3_return", "acc@5_return", "mrr_return",
        "ndcg@1_return", "ndcg@3_return", "ndcg@5_return",
        "acc@1_explore", "acc@3_explore", "acc@5_explore", "mrr_explore",
        "ndcg@1_explore", "ndcg@3_explore", "ndcg@5_explore",
        "oov_share",
    ]  # fmt: skip
    # the overall part is unchanged by the split
    assert {k: rep[k] for k in ranking_report(RANKS, ks=(1, 3, 5))} == ranking_report(RANKS, ks=(1, 3, 5))
    assert rep["return_share"] == 0.5 and rep["explore_share"] == 0.5
    # returns: ranks 1 and 4
    assert (rep["acc@1_return"], rep["acc@3_return"], rep["acc@5_return"]) == (0.5, 0.5, 1.0)
    assert rep["mrr_return"] == pytest.approx((1 + 1 / 4) / 2)
    assert rep["ndcg@5_return"] == pytest.approx((1 + 1 / math.log2(5)) / 2)
    assert rep["ndcg@3_return"] == 0.5
    # explorations: rank 2 and an out-of-vocabulary miss (0 in MRR and NDCG)
    assert (rep["acc@1_explore"], rep["acc@3_explore"], rep["acc@5_explore"]) == (0.0, 0.5, 0.5)
    assert rep["mrr_explore"] == pytest.approx(0.25)
    assert rep["ndcg@3_explore"] == pytest.approx((1 / math.log2(3)) / 2)
    assert rep["oov_share"] == 0.25


def test_ranking_report_empty_part_is_nan_and_input_types():
    rep = ranking_report(pd.Series([1, 3]), ks=(1,), kind=pd.Series(["return", "return"], index=[5, 6]))
    assert rep["return_share"] == 1.0 and rep["explore_share"] == 0.0
    assert rep["acc@1_return"] == 0.5 and rep["mrr_return"] == pytest.approx(2 / 3)
    assert all(math.isnan(rep[k]) for k in ("acc@1_explore", "mrr_explore", "ndcg@1_explore"))
    assert "oov_share" not in rep
    # categorical kinds, integer 0/1 oov flags, no kind
    rep = ranking_report([2, OOV_RANK], ks=(1,), kind=pd.Categorical(["explore", "explore"]), oov=np.array([0, 1]))
    assert math.isnan(rep["mrr_return"]) and rep["mrr_explore"] == 0.25 and rep["oov_share"] == 0.5
    rep = ranking_report([1], oov=[False])
    assert rep["oov_share"] == 0.0 and "return_share" not in rep


@pytest.mark.parametrize(
    "kind, oov, match",
    [
        (["return", "visit"], None, "'return' or 'explore'"),
        (["return", None], None, "'return' or 'explore'"),
        (["return"], None, "one value per rank"),
        (None, [0.0, 1.0], "booleans"),
        (None, [0, 2], "booleans"),
        (None, [[True, False]], "one value per rank"),
    ],
)
def test_ranking_report_split_errors(kind, oov, match):
    with pytest.raises(ValueError, match=match):
        ranking_report([1, 2], kind=kind, oov=oov)


class FixedTable(FixedRanks):
    """Fake estimator with a target_table (rank, kind, oov)."""

    def target_table(self, X, protocol="all"):
        self.calls.append(("table", protocol))
        table = pd.DataFrame({"rank": self.ranks, "kind": KIND, "oov": OOV}, index=np.arange(4) * 10)
        return table if protocol == "all" else table.iloc[-1:]


def test_evaluate_uses_target_table_and_scorers_target_ranks():
    est = FixedTable(RANKS)
    rep = evaluate(est, None, ks=(1, 3, 5))
    assert rep == pytest.approx(ranking_report(RANKS, ks=(1, 3, 5), kind=KIND, oov=OOV), nan_ok=True)
    assert rep["mrr_return"] == pytest.approx(0.625) and rep["oov_share"] == 0.25
    last = evaluate(est, None, protocol="last", ks=(1,))
    assert last["n_targets"] == 1 and last["explore_share"] == 1.0 and last["oov_share"] == 1.0
    assert math.isnan(last["acc@1_return"]) and last["acc@1_explore"] == 0.0
    assert est.calls == [("table", "all"), ("table", "last")]
    # the scorers keep using target_ranks
    assert mrr_scorer(est, None) == pytest.approx(0.4375) and est.calls[-1] == "all"
    # without target_table: no split
    assert "return_share" not in evaluate(FixedRanks(RANKS), None)


# --------------------------------------------------------------------------------------------------
# target_table of a real estimator on a hand-made frame (grid cells x/y, day/slot times)
# --------------------------------------------------------------------------------------------------
CELLS = {"A": (1, 1), "B": (2, 2), "C": (3, 3), "D": (4, 4), "Z": (50, 50), "Y": (60, 60)}  # Z, Y: OOV


def _grid_visits(trajectories, labels=None):
    """[(user, day, "cells")] -> visit frame, one visit per half-hour slot from slot 10."""
    rows = [
        {"user_id": user, "day": day, "slot": 10 + t, "x": CELLS[c][0], "y": CELLS[c][1]}
        for user, day, cells in trajectories
        for t, c in enumerate(cells)
    ]
    return pd.DataFrame(rows, index=labels)


@pytest.fixture(scope="module")
def history_model():
    from trajmoe import HistoryFrequencyBaseline

    # training counts: A 3, B 2, C 1, D 1 (popularity breaks the ties of never-visited cells)
    return HistoryFrequencyBaseline(min_stays=1).fit(_grid_visits([(1, 0, "AAABBCD")]))


def test_target_table_hand_checked(history_model):
    X = _grid_visits([(9, 10, "ABAC")], labels=["a", "b", "c", "d"])
    table = history_model.target_table(X)
    assert list(table.columns) == ["rank", "kind", "oov"]
    assert table["rank"].dtype == np.int64 and table["oov"].dtype == bool
    assert table.index.tolist() == ["a", "b", "c"]
    assert table["kind"].tolist() == ["explore", "return", "explore"]
    assert not table["oov"].any()
    # history frequency: count so far + 0.5 x recency + tiny popularity
    #   at A -> B: A (1.5) first, then B (popularity 2/7)                   -> 2
    #   at B -> A: B (1 + 0.5) before A (1 + 0.25)                          -> 2
    #   at A -> C: A (2.5), B (1.25), then C ties D (popularity 1/7 each):
    #   pessimistic, D counts as ranked before C                            -> 4 (3 by cell id)
    assert table["rank"].tolist() == [2, 2, 4]
    pd.testing.assert_series_equal(history_model.target_ranks(X), table["rank"])
    rep = evaluate(history_model, X, ks=(1, 3))
    assert rep["return_share"] == pytest.approx(1 / 3) and rep["oov_share"] == 0.0
    assert rep["acc@1"] == 0.0 and rep["acc@3"] == pytest.approx(2 / 3)
    assert rep["mrr_return"] == 0.5 and rep["mrr_explore"] == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_target_table_current_cell_windows_and_oov_cells(history_model):
    n_cells = history_model.encoder_.cities_["city"].n_locations
    X = _grid_visits([(9, 10, "ABACCZZYA"), (9, 20, "BA"), (8, 10, "CA")])
    X.index = [f"r{i}" for i in range(len(X))]
    shuffled = X.sample(frac=1.0, random_state=0)
    table = history_model.target_table(shuffled)
    # targets listed in the order of the X passed
    assert table.index.tolist() == [i for i in shuffled.index if i in set(table.index)]
    table = table.loc[[f"r{i}" for i in [0, 1, 2, 3, 4, 5, 6, 7, 9, 11]]]
    assert table["kind"].tolist() == [
        "explore",  # A -> B
        "return",   # B -> A (A before)
        "explore",  # A -> C
        "return",   # C -> C: the current cell counts
        "explore",  # C -> Z
        "return",   # Z -> Z: an out-of-vocabulary cell is recognised by its grid cell
        "explore",  # Z -> Y: another out-of-vocabulary cell
        "return",   # Y -> A
        "explore",  # user 9, next window: B -> A (A was visited only in an earlier window)
        "explore",  # user 8: C -> A (A was visited only by another user)
    ]  # fmt: skip
    assert table["oov"].tolist() == [False] * 4 + [True, True, True] + [False] * 3
    # cells outside the fitted region are scored on the fly (Z and Y join the candidates): no miss
    assert (table["rank"] <= n_cells + 2).all()
    # C -> C: A (2 visits + 0.5 x 1/2) before C (1 visit + 0.5, the current cell) -> 2
    assert table.loc["r3", "rank"] == 2
    last = history_model.target_table(X, protocol="last")
    assert last.index.tolist() == ["r7", "r9", "r11"]
    assert last["kind"].tolist() == ["return", "explore", "explore"]
    pd.testing.assert_frame_equal(last, history_model.target_table(X).loc[last.index])
    rep = evaluate(history_model, X)
    assert rep["n_targets"] == 10 and rep["return_share"] == 0.4 and rep["oov_share"] == 0.3


def test_target_table_no_targets(history_model):
    table = history_model.target_table(_grid_visits([(9, 10, "A")]))
    assert table.empty and list(table.columns) == ["rank", "kind", "oov"]
    assert table["rank"].dtype == np.int64 and table["oov"].dtype == bool
    with pytest.raises(ValueError, match="protocol"):
        history_model.target_table(_grid_visits([(9, 10, "AB")]), protocol="first")


def test_scorer_names_are_registered_with_scikit_learn():
    from sklearn.metrics import get_scorer as sklearn_get_scorer
    from sklearn.metrics import get_scorer_names

    from trajmoe.metrics import SCORER_NAMES, register_scorers

    assert set(SCORER_NAMES) <= set(get_scorer_names())
    assert {"acc@1", "acc@10", "mrr", "ndcg@10", "acc@1_last", "ndcg@5_last"} <= set(SCORER_NAMES)
    assert sklearn_get_scorer("acc@5") == get_scorer("acc@5")
    assert sklearn_get_scorer("mrr_last") == get_scorer("mrr", protocol="last")
    assert register_scorers() == SCORER_NAMES                      # again: nothing changes


@settings(max_examples=50, deadline=None)
@given(ranks=st.lists(st.integers(1, 10_000), min_size=2, max_size=300), seed=st.integers(0, 2**31))
def test_means_do_not_depend_on_the_order_of_the_targets(ranks, seed):
    # float sums depend on their order: the metrics sum in one order, to the last bit
    r = np.array(ranks)
    shuffled = np.random.default_rng(seed).permutation(r)
    assert mean_reciprocal_rank(shuffled) == mean_reciprocal_rank(r)
    assert ndcg_at_k(shuffled, 10_000) == ndcg_at_k(r, 10_000)
    assert ranking_report(shuffled) == ranking_report(r)
