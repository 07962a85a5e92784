"""Tests of the counting baselines (trajmoe.estimators._counting) on hand-made frames (hand-computed
predictions and ranks) and an end-to-end check on a slice of the real YJMob100K city A."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from trajmoe import (GravityBaseline, HistoryFrequencyBaseline, HistoryGravityBaseline, MarkovBaseline,
                     PopularityBaseline, SpatialSemanticEncoder)
from trajmoe.datasets import load_yjmob100k
from trajmoe.exceptions import DataWarning
from trajmoe.metrics import accuracy_at_k

BASELINES = [PopularityBaseline, MarkovBaseline, HistoryFrequencyBaseline]

# Cells of a hand-made x/y city; location ids follow sorted (x, y):
# Q=(1,1) id 0, R=(2,2) id 1, S=(3,3) id 2, D=(4,4) id 3, P=(5,5) id 4.
CELL = {"Q": (1, 1), "R": (2, 2), "S": (3, 3), "D": (4, 4), "P": (5, 5), "Z": (9, 9)}
LABEL = {k: f"city:{x}_{y}" for k, (x, y) in CELL.items()}


def visits(trajectories):
    """{user: (day, "cells")} -> visit frame, one visit per half-hour slot from slot 10."""
    rows = []
    for user, (day, cells) in trajectories.items():
        for t, c in enumerate(cells):
            rows.append({"user_id": user, "day": day, "slot": 10 + t, "x": CELL[c][0], "y": CELL[c][1]})
    return pd.DataFrame(rows)


# Training visits: P 7, Q 3, R 3, S 1, D 1 (total 15).
# Transitions: P->Q 3, Q->P 2, P->R 2, R->P 1, R->R 1, P->S 1, S->P 1; D has none.
TRAIN = visits({1: (0, "PQPQPQ"), 2: (0, "PRPRR"), 3: (0, "D"), 4: (0, "PSP")})
# Test: user 9 visits Q R R Q S on day 10; user 8 visits P Q on day 0 and P on day 3.
TEST = visits({9: (10, "QRRQS"), 8: (0, "PQ")})
TEST = pd.concat([TEST, visits({8: (3, "P")})], ignore_index=True)


def closed():
    """The closed vocabulary of the hand-made cases: only cells with a visit are candidates."""
    return SpatialSemanticEncoder(region_margin=None)


def fitted(cls, **params):
    return cls(min_stays=1, encoder=closed(), **params).fit(TRAIN)


def test_popularity_predicts_most_visited_cell():
    model = fitted(PopularityBaseline)
    assert model.encoder_.location_table("city")["n_visits"].tolist() == [3, 3, 1, 1, 7]
    assert model.predict(TEST).tolist() == [LABEL["P"]] * len(TEST)


def test_markov_predicts_most_frequent_successor_and_backs_off_to_popularity():
    model = fitted(MarkovBaseline)
    X = visits({7: (20, "PQRDSZ")})   # Z = (9, 9) is outside the vocabulary
    pred = model.predict(X).tolist()
    assert pred == [
        LABEL["Q"],   # from P: Q 3, R 2, S 1
        LABEL["P"],   # from Q: P 2
        LABEL["P"],   # from R: P 1 and R 1 tie -> the more popular P (7 > 3 visits)
        LABEL["P"],   # from D: no transition seen -> popularity
        LABEL["P"],   # from S: P 1
        LABEL["P"],   # unknown cell -> popularity
    ]
    assert model.transitions_.loc[("city",)].sum() == 11


def test_markov_partial_fit_accumulates_transitions():
    model = fitted(MarkovBaseline)
    # three more R -> S transitions make S the successor of R
    model.partial_fit(visits({5: (0, "RSRSRS")}))
    assert model.predict(visits({7: (20, "R")})).tolist() == [LABEL["S"]]
    assert model.predict(visits({7: (20, "P")})).tolist() == [LABEL["Q"]]   # P->Q 3 vs P->R 2
    # fit starts again from scratch
    model.fit(TRAIN)
    assert model.predict(visits({7: (20, "R")})).tolist() == [LABEL["P"]]


def test_history_frequency_most_frequent_so_far_ties_most_recent():
    model = fitted(HistoryFrequencyBaseline)
    X = visits({9: (10, "QRRQSD")})
    assert model.predict(X).tolist() == [
        LABEL["Q"],   # Q 1
        LABEL["R"],   # Q 1, R 1: tie -> the most recent R
        LABEL["R"],   # R 2
        LABEL["Q"],   # Q 2, R 2: tie -> most recent Q
        LABEL["Q"],   # Q 2, R 2, S 1: Q more recent than R
        LABEL["Q"],   # Q 2, R 2, S 1, D 1
    ]
    # an unknown current cell is not counted: the first prediction is popularity
    assert model.predict(visits({9: (10, "ZZ")})).tolist() == [LABEL["P"], LABEL["P"]]


def test_history_frequency_with_moves_counts_the_windows_own_transitions():
    # Q R S Q: back at Q, R followed Q once. Plain: Q 2 visits (recency 1) beats R 1 (1/3);
    # moves_weight 1: R 1 + 0.5/3 + 1 = 2.17 < Q 2 + 0.5 = 2.5; moves_weight 2: R 3.17 wins
    X = visits({9: (10, "QRSQ")})
    assert fitted(HistoryFrequencyBaseline).predict(X).tolist()[-1] == LABEL["Q"]
    assert fitted(HistoryFrequencyBaseline, moves_weight=1).predict(X).tolist()[-1] == LABEL["Q"]
    assert fitted(HistoryFrequencyBaseline, moves_weight=2).predict(X).tolist() == [
        LABEL["Q"], LABEL["R"], LABEL["S"], LABEL["R"]]     # no move from Q..S before: as plain
    with pytest.raises(ValueError, match="moves_weight"):
        HistoryFrequencyBaseline(moves_weight=-1).fit(TRAIN)


def test_history_frequency_recency_beats_popularity_even_after_long_gaps():
    # P = (5,5) is by far the most popular cell (100 of 113 training visits); in the test window
    # P and Q are each visited twice, Q more recently, then 12 distinct other cells follow: the
    # tie of counts goes to the most recent (Q), never to the more popular P
    others = [(20 + i, 1) for i in range(12)]
    train = pd.DataFrame(
        [{"user_id": 100 + i, "day": 0, "slot": 0, "x": 5, "y": 5} for i in range(100)]
        + [{"user_id": 1, "day": 0, "slot": 0, "x": 1, "y": 1}]
        + [{"user_id": 2, "day": 0, "slot": i, "x": x, "y": y} for i, (x, y) in enumerate(others)])
    model = HistoryFrequencyBaseline(min_stays=1).fit(train)
    cells = [(5, 5), (5, 5), (1, 1), (1, 1), *others]
    test = pd.DataFrame([{"user_id": 9, "day": 5, "slot": t, "x": x, "y": y} for t, (x, y) in enumerate(cells)])
    pred = model.predict(test)
    assert pred[:3].tolist() == [LABEL["P"], LABEL["P"], LABEL["P"]]
    assert pred[3:].tolist() == [LABEL["Q"]] * 13


@pytest.mark.parametrize("cls", BASELINES)
def test_predict_one_label_per_row_in_x_order(cls):
    model = fitted(cls)
    expected = pd.Series(model.predict(TEST), index=TEST.index)
    shuffled = TEST.sample(frac=1.0, random_state=3)
    shuffled.index = ["r%d" % (i % 3) for i in range(len(shuffled))]   # non-unique labels
    pred = model.predict(shuffled)
    assert pred.shape == (len(TEST),) and pred.dtype == object
    assert pred.tolist() == expected.loc[TEST.sample(frac=1.0, random_state=3).index].tolist()
    labels, scores = model.predict_topk(shuffled, k=3)
    assert labels.shape == scores.shape == (len(TEST), 3)
    assert labels[:, 0].tolist() == pred.tolist()
    assert np.all(np.diff(scores, axis=1) <= 0)


# Hand-computed ranks of the history-frequency baseline on TEST (window_days 3); ties are
# pessimistic (trajmoe.metrics): every cell tied with the true one counts as ranked before it.
# user 9 (rows 0-4): Q R R Q S
#   at Q (row 0) target R: Q (current) and P (most popular) score higher -> 3
#   at R (row 1) target R: R (count 1, current) -> 1
#   at R (row 2) target Q: R (count 2) higher -> 2
#   at Q (row 3) target S: Q, R (count 2), P (popularity 7/15) higher; D ties S (1/15) -> 5
# user 8 (rows 5-6, then row 7 alone in the window of day 3):
#   at P (row 5) target Q: P higher; R ties Q (3/15) -> 3
HF_RANKS_ALL = {0: 3, 1: 1, 2: 2, 3: 5, 5: 3}


def test_target_ranks_protocols_hand_checked():
    model = fitted(HistoryFrequencyBaseline)
    ranks = model.target_ranks(TEST, protocol="all")
    assert ranks.dtype == np.int64
    assert ranks.to_dict() == HF_RANKS_ALL
    last = model.target_ranks(TEST, protocol="last")
    assert last.to_dict() == {3: 5, 5: 3}     # last target of each window
    # min_stays drops user 8's 2-visit window
    model.set_params(min_stays=3)
    assert model.target_ranks(TEST).to_dict() == {0: 3, 1: 1, 2: 2, 3: 5}
    assert model.target_ranks(TEST, protocol="last").to_dict() == {3: 5}
    with pytest.raises(ValueError, match="protocol"):
        model.target_ranks(TEST, protocol="first")


def test_target_ranks_popularity_and_markov_hand_checked():
    # popularity order: P, then Q and R (3 visits, tied), then S and D (1 visit, tied); ties are
    # pessimistic, so Q and R both rank 3, S and D both 5
    pop = fitted(PopularityBaseline).target_ranks(TEST)
    assert pop.to_dict() == {0: 3, 1: 3, 2: 3, 3: 5, 5: 3}
    # Markov from Q: P (2), then popularity Q, R, S, D;  from R: P (1 + 7/15), R (1 + 3/15), Q, ...
    # rows: Q->R: 3; R->R: 2; R->Q: 3; Q->S: 5 (D ties S); P->Q: 1
    mk = fitted(MarkovBaseline).target_ranks(TEST)
    assert mk.to_dict() == {0: 3, 1: 2, 2: 3, 3: 5, 5: 1}


def test_target_ranks_follow_x_index_and_oov_target_is_a_miss():
    model = fitted(HistoryFrequencyBaseline)
    X = visits({9: (10, "QZQ")})
    X.index = ["a", "b", "c"]
    ranks = model.target_ranks(X.iloc[::-1])
    # rows in time order: a (Q), b (Z), c (Q); targets after a and b, listed in the order of the
    # X passed (reversed: c, b, a)
    assert ranks.index.tolist() == ["b", "a"]
    # at Q target Z (out of vocabulary): a miss, rank N + 1 or more
    assert ranks["a"] > model.encoder_.cities_["city"].n_locations
    assert ranks["b"] == 1                        # Z not counted; Q (count 1) first


@pytest.mark.parametrize("cls", BASELINES)
def test_score_is_acc_at_1(cls):
    model = fitted(cls)
    ranks = model.target_ranks(TEST)
    assert model.score(TEST) == pytest.approx(accuracy_at_k(ranks.to_numpy(), 1))
    # and Acc@1 is the share of rows whose prediction is the next visit's cell
    pred = pd.Series(model.predict(TEST), index=TEST.index)
    truth = {0: "R", 1: "R", 2: "Q", 3: "S", 5: "Q"}
    hits = [pred[i] == LABEL[c] for i, c in truth.items()]
    assert model.score(TEST) == pytest.approx(np.mean(hits))


def test_scores_hand_values():
    assert fitted(PopularityBaseline).score(TEST) == 0.0
    assert fitted(MarkovBaseline).score(TEST) == pytest.approx(1 / 5)
    assert fitted(HistoryFrequencyBaseline).score(TEST) == pytest.approx(1 / 5)


def test_predict_ties_go_to_lower_location_id():
    # 14 cells: (1,1) and (2,1) visited once, (3,1)..(14,1) twice each: all 12 tie for the top.
    # One visit per half-hour slot: rows at the same time would be exact duplicates, counted once.
    cells = [1, 2] + list(range(3, 15)) * 2
    rows = [{"user_id": 1, "day": 0, "slot": slot, "x": x, "y": 1} for slot, x in enumerate(cells)]
    model = PopularityBaseline(min_stays=1).fit(pd.DataFrame(rows))
    counts = model.encoder_.location_table("city").set_index(["ix", "iy"])["n_visits"]
    assert counts[(1, 1)] == counts[(2, 1)] == 1 and (counts.loc[[(x, 1) for x in range(3, 15)]] == 2).all()
    # rank convention: the lowest id among tied cells first, id 2 = (3, 1)
    assert model.predict(pd.DataFrame(rows[:1])).tolist() == ["city:3_1"]


@pytest.mark.parametrize("cls", BASELINES)
def test_sklearn_api(cls):
    model = cls(min_stays=2, window_days=4)
    own = {"moves_weight": 0} if cls is HistoryFrequencyBaseline else {}
    assert model.get_params() == {"encoder": None, "window_days": 4, "min_stays": 2, "max_tokens": 144,
                                  "city_tz": None, **own}
    with pytest.raises(NotFittedError):
        model.predict(TEST)
    with pytest.raises(NotFittedError):
        model.target_ranks(TEST)
    assert model.fit(TRAIN) is model
    assert model.partial_fit(TEST) is model
    fresh = clone(model)
    assert not hasattr(fresh, "encoder_") and fresh.get_params() == model.get_params()
    again = pickle.loads(pickle.dumps(model))
    assert again.predict(TEST).tolist() == model.predict(TEST).tolist()
    pd.testing.assert_series_equal(again.target_ranks(TEST), model.target_ranks(TEST))


def test_caller_frames_not_modified():
    train, test = TRAIN.copy(), TEST.copy()
    for cls in BASELINES:
        model = cls(min_stays=1).fit(TRAIN).partial_fit(TEST)
        model.predict(TEST)
        model.target_ranks(TEST)
    pd.testing.assert_frame_equal(TRAIN, train)
    pd.testing.assert_frame_equal(TEST, test)


# --------------------------------------------------------------------------------------------------
# batch invariance: the scores of a visit do not depend on the windows that share its batch
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [HistoryFrequencyBaseline, "gravity", "history_gravity"])
def test_scores_do_not_depend_on_the_batch(cls):
    # TEST has windows of 5, 2 and 1 visits: scored in one batch (width 5) or one window per batch
    if cls == "gravity":
        model = GravityBaseline(beta=1.0, offset=250.0, min_stays=1, encoder=closed()).fit(TRAIN)
    elif cls == "history_gravity":
        model = HistoryGravityBaseline(beta=1.0, offset=250.0, history_weight=0.5, popularity_weight=0.25,
                                       recency_weight=1.0, min_stays=1, encoder=closed()).fit(TRAIN)
    else:
        model = fitted(cls)
    labels, scores = model.predict_topk(TEST, k=5)
    model._eval_batch_tokens = 1          # one window a batch
    labels_1, scores_1 = model.predict_topk(TEST, k=5)
    np.testing.assert_array_equal(labels_1, labels)
    np.testing.assert_array_equal(scores_1, scores)      # exactly, not approximately


# --------------------------------------------------------------------------------------------------
# gravity baselines on a hand-made city: cells A=(0,0), B=(1,0), C=(3,0), D=(0,4) of an x/y grid of
# 500 m cells (centroids 500 m x index). Training visits A 1, B 2, C 5, D 2 (N = 10, 4 cells):
# Laplace-smoothed shares (n + 1) / 14 = 2/14, 3/14, 6/14, 3/14.
# --------------------------------------------------------------------------------------------------
GCELL = {"A": (0, 0), "B": (1, 0), "C": (3, 0), "D": (0, 4), "O": (1, 1)}    # O: outside the vocabulary
GLABEL = {k: f"city:{x}_{y}" for k, (x, y) in GCELL.items()}
SHARE = np.array([2, 3, 6, 3]) / 14          # of A, B, C, D (the hand computations' order)
CENTROID = np.array([[0, 0], [500, 0], [1500, 0], [0, 2000]], float)


def gvisits(trajectories, day=0):
    rows = []
    for user, cells in trajectories.items():
        for t, c in enumerate(cells):
            rows.append({"user_id": user, "day": day, "slot": 10 + t, "x": GCELL[c][0], "y": GCELL[c][1]})
    return pd.DataFrame(rows)


GTRAIN = gvisits({1: "A", 2: "BB", 3: "CCCCC", 4: "DD"})


def gravity_by_hand(at, beta=1.0, offset=250.0):
    """share_c (d + offset)^-beta, normalised: the gravity probabilities after a visit at ``at`` (metres)."""
    w = SHARE * (np.hypot(*(CENTROID - at).T) + offset) ** -beta
    return w / w.sum()


def test_gravity_hand_checked_ranking_and_log_probabilities():
    model = GravityBaseline(beta=1.0, offset=250.0, min_stays=1, encoder=closed()).fit(GTRAIN)
    # location ids follow sorted (x, y): A, D, B, C
    assert model.encoder_.location_table("city")["n_visits"].tolist() == [1, 2, 2, 5]
    assert (model.beta_, model.offset_) == (1.0, 250.0)
    assert np.isnan(model.log_likelihood_) and model.search_results_ is None   # nothing fitted
    # from B (500, 0): A 2/750, B 3/250, C 6/1250, D 3/(2061.6 + 250) -> B, C, A, D: the popular C,
    # 1 km away, before the nearer A
    labels, scores = model.predict_topk(gvisits({9: "B"}, day=5), k=4)
    assert labels[0].tolist() == [GLABEL[c] for c in "BCAD"]
    p = gravity_by_hand(np.array([500.0, 0.0]))
    np.testing.assert_allclose(scores[0], np.log(p[[1, 2, 0, 3]]), rtol=1e-12)
    # from A (0, 0): A 2/250, B 3/750, C 6/1750, D 3/2250 -> A, B, C, D
    assert model.predict_topk(gvisits({9: "A"}, day=5), k=4)[0][0].tolist() == [GLABEL[c] for c in "ABCD"]
    # ranks of a window B -> A -> C: A after B is 3rd (B, C first); C after A is 3rd (A, B first)
    assert model.target_ranks(gvisits({9: "BAC"}, day=5)).to_dict() == {0: 3, 1: 3}


def test_gravity_scores_a_current_cell_outside_the_vocabulary_from_its_centroid():
    model = GravityBaseline(beta=1.0, offset=250.0, min_stays=1, encoder=closed()).fit(GTRAIN)
    # O = (1, 1) is no candidate, but its centroid (500, 500) is known: C (1118 m), B (500 m),
    # A (707 m), D (1581 m). Popularity alone would put D (3/14) before A (2/14).
    labels, scores = model.predict_topk(gvisits({9: "O"}, day=5), k=4)
    assert labels[0].tolist() == [GLABEL[c] for c in "CBAD"]
    p = gravity_by_hand(np.array([500.0, 500.0]))
    np.testing.assert_allclose(scores[0], np.log(p[[2, 1, 0, 3]]), rtol=1e-12)


def test_history_gravity_mixture_hand_checked():
    model = HistoryGravityBaseline(beta=1.0, offset=250.0, history_weight=0.5, popularity_weight=0.25,
                                   recency_weight=1.0, min_stays=1, encoder=closed()).fit(GTRAIN)
    # window A C A B, at B (t = 3): visits so far A 2 (last at t = 2, recency 1/2), C 1 (recency
    # 1/3), B 1 (recency 1): history weights A 2.5, B 2, C 4/3 (sum 35/6), D 0.
    # P = 0.5 H + 0.5 (0.25 share + 0.75 G): B .415, A .280, C .255, D .050; gravity alone would
    # put C (.231) before A (.128)
    X = gvisits({9: "ACAB"}, day=5)
    labels, scores = model.predict_topk(X, k=4)
    h = np.array([2.5, 2.0, 4 / 3, 0.0]) / (35 / 6)
    p = 0.5 * h + 0.5 * (0.25 * SHARE + 0.75 * gravity_by_hand(np.array([500.0, 0.0])))
    assert labels[3].tolist() == [GLABEL[c] for c in "BACD"]
    np.testing.assert_allclose(scores[3], np.log(p[[1, 0, 2, 3]]), rtol=1e-12)
    np.testing.assert_allclose(np.exp(scores[3]).sum(), 1.0)          # log-probabilities
    # the first visit has the current cell alone as history: A with probability 0.5 + 0.5 E(A)
    e = 0.25 * SHARE + 0.75 * gravity_by_hand(np.array([0.0, 0.0]))
    np.testing.assert_allclose(scores[0, 0], np.log(0.5 + 0.5 * e[0]), rtol=1e-12)


def test_history_gravity_moves_count_as_visits_hand_checked():
    model = HistoryGravityBaseline(beta=1.0, offset=250.0, history_weight=0.5, popularity_weight=0.25,
                                   recency_weight=1.0, moves_weight=4.0, min_stays=1, encoder=closed()).fit(GTRAIN)
    # window A B C A, at A (t = 3): visits A 2 (recency 1), B 1 (1/3), C 1 (1/2); the earlier
    # visit to A went on to B: one move, worth 4 visits. History weights A 3, B 16/3, C 1.5
    # (sum 59/6), D 0. P: B .387, A .349, C .207, D .057; without the move A .454 comes first
    # (C .259, B .231)
    X = gvisits({9: "ABCA"}, day=5)
    labels, scores = model.predict_topk(X, k=4)
    h = np.array([3.0, 16 / 3, 1.5, 0.0]) / (59 / 6)
    p = 0.5 * h + 0.5 * (0.25 * SHARE + 0.75 * gravity_by_hand(np.array([0.0, 0.0])))
    assert labels[3].tolist() == [GLABEL[c] for c in "BACD"]
    np.testing.assert_allclose(scores[3], np.log(p[[1, 0, 2, 3]]), rtol=1e-12)
    without = clone(model).set_params(moves_weight=0.0).fit(GTRAIN)
    assert without.predict_topk(X, k=4)[0][3].tolist() == [GLABEL[c] for c in "ACBD"]


def test_history_gravity_additive_hand_checked():
    model = HistoryGravityBaseline(combine="additive", beta=1.0, offset=250.0, count_weight=1.0,
                                   recency_weight=0.5, min_stays=1, encoder=closed()).fit(GTRAIN)
    assert not hasattr(model, "history_weight_") and model.count_weight_ == 1.0
    # window A C A B, at B: score = log G + count + 0.5 recency, log-softmax over the 4 cells
    _, scores = model.predict_topk(gvisits({9: "ACAB"}, day=5), k=4)
    s = np.log(gravity_by_hand(np.array([500.0, 0.0]))) + np.array([2, 1, 1, 0]) + 0.5 * np.array([0.5, 1, 1 / 3, 0])
    np.testing.assert_allclose(scores[3], np.sort(s - np.log(np.exp(s).sum()))[::-1], rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# fitted parameters recover planted ones (simulated movers on a 15 x 15 grid of 500 m cells)
# --------------------------------------------------------------------------------------------------
def simulate_gravity(beta, offset, history_weight=0.0, popularity_weight=0.0, recency_weight=0.0,
                     n_side=15, n_singles=20000, n_movers=3000, length=6, seed=0):
    """Visits of ``n_singles`` one-visit users drawn from a random popularity (they pin the
    popularity counts down) and of ``n_movers`` users who move ``length - 1`` times by the
    HistoryGravityBaseline mixture: a return in proportion to count + recency_weight x recency
    with probability history_weight, else popularity alone (popularity_weight) or the gravity law
    popularity x (d + offset)^-beta."""
    rng = np.random.default_rng(seed)
    ix, iy = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    cells = np.column_stack([ix.ravel(), iy.ravel()])
    n = len(cells)
    xy = cells * 500.0
    pop = rng.lognormal(0.0, 1.0, n)
    pop /= pop.sum()
    gravity = pop * (np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1]) + offset) ** -beta
    gravity /= gravity.sum(axis=1, keepdims=True)
    seq = np.empty((n_movers, length), np.int64)
    seq[:, 0] = rng.choice(n, n_movers, p=pop)
    movers = np.arange(n_movers)
    for t in range(1, length):
        p = (1 - history_weight) * ((1 - popularity_weight) * gravity[seq[:, t - 1]] + popularity_weight * pop)
        if history_weight:
            count, last = np.zeros((n_movers, n)), np.full((n_movers, n), -1.0)
            for s in range(t):
                np.add.at(count, (movers, seq[:, s]), 1.0)
                last[movers, seq[:, s]] = s
            w = count + recency_weight * np.where(last >= 0, 1.0 / (t - last), 0.0)   # 1 / (1 + (t-1) - last)
            p += history_weight * w / w.sum(axis=1, keepdims=True)
        seq[:, t] = (p.cumsum(axis=1) > rng.random(n_movers)[:, None]).argmax(axis=1)
    single = rng.choice(n, n_singles, p=pop)
    visited = np.r_[single, seq.ravel()]
    return pd.DataFrame({
        "user_id": np.r_[np.arange(n_singles), n_singles + np.repeat(movers, length)], "day": 0,
        "slot": np.r_[np.zeros(n_singles, np.int64), np.tile(np.arange(length), n_movers)],
        "x": cells[visited, 0], "y": cells[visited, 1]})


def test_gravity_fit_recovers_a_planted_decay():
    X = simulate_gravity(beta=2.0, offset=500.0)
    model = GravityBaseline(min_stays=2, selection="likelihood", random_state=0, encoder=closed()).fit(X)
    assert model.offset_ == 500.0
    assert model.beta_ == pytest.approx(2.0, abs=0.1)
    # 20 % of the 3000 movers are held out: 600 users x 5 moves
    assert model.n_fit_targets_ == 2970
    results = model.search_results_
    assert results["offset"].tolist() == [50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0]
    assert results["log_likelihood"].max() == model.log_likelihood_
    # the uniform model over 225 cells scores log(1/225) = -5.42 per target
    assert model.log_likelihood_ > np.log(1 / 225) + 1.0
    # with the offset given, beta alone is fitted
    again = GravityBaseline(offset=500.0, min_stays=2, random_state=0, encoder=closed()).fit(X)
    assert again.beta_ == pytest.approx(model.beta_) and len(again.search_results_) == 1
    # beta = 0 (pure popularity; the offset then does not matter) is far less likely
    flat = GravityBaseline(beta=0.0, min_stays=2, random_state=0, encoder=closed(), offset_grid=(500.0, 1000.0),
                           selection="likelihood").fit(X)
    assert flat.beta_ == 0.0 and flat.log_likelihood_ < model.log_likelihood_ - 0.5
    assert flat.search_results_["log_likelihood"].nunique() == 1


def test_history_gravity_fit_recovers_planted_weights():
    X = simulate_gravity(beta=2.0, offset=500.0, history_weight=0.4, popularity_weight=0.2, recency_weight=1.0)
    model = HistoryGravityBaseline(offset=500.0, min_stays=2, random_state=0, encoder=closed()).fit(X)
    assert model.beta_ == pytest.approx(2.0, abs=0.25)
    assert model.history_weight_ == pytest.approx(0.4, abs=0.05)
    assert model.popularity_weight_ == pytest.approx(0.2, abs=0.08)
    assert 0.4 < model.recency_weight_ < 2.0
    assert not hasattr(model, "count_weight_")
    # the additive form fits the same data worse
    additive = HistoryGravityBaseline(combine="additive", offset=500.0, min_stays=2, random_state=0,
                                      encoder=closed()).fit(X)
    assert additive.count_weight_ > 0 and additive.log_likelihood_ < model.log_likelihood_
    # selection by held-out Acc@1 reports it per offset, the likelihood too
    chosen = HistoryGravityBaseline(min_stays=2, random_state=0, encoder=closed(), offset_grid=(100.0, 500.0)).fit(X)
    assert chosen.search_results_.columns.tolist() == ["offset", "beta", "history_weight", "popularity_weight",
                                                       "recency_weight", "log_likelihood", "acc@1"]
    best = chosen.search_results_.sort_values(["acc@1", "log_likelihood"]).iloc[-1]
    assert chosen.offset_ == best["offset"] and chosen.beta_ == best["beta"]


def test_gravity_parameters_are_shared_by_cities_and_kept_by_partial_fit():
    X = simulate_gravity(beta=2.0, offset=500.0, n_singles=4000, n_movers=600)
    two = pd.concat([X.assign(city="a"), X.assign(city="b", x=X["x"] + 100)], ignore_index=True)
    model = GravityBaseline(offset=500.0, min_stays=2, random_state=0, encoder=closed()).fit(two)
    assert model.cities_ == ["a", "b"] and np.isscalar(model.beta_)
    assert model.beta_ == pytest.approx(2.0, abs=0.3)
    beta = model.beta_
    # partial_fit registers a new city and adds its counts; the shared parameters stay
    model.partial_fit(X.assign(city="c").iloc[:50])
    assert model.cities_ == ["a", "b", "c"] and model.beta_ == beta
    assert model.encoder_.location_table("c")["n_visits"].sum() == 50
    assert model.predict(X.assign(city="c").iloc[:3]).shape == (3,)


GRAVITY_MODELS = [GravityBaseline, HistoryGravityBaseline]


@pytest.mark.parametrize("cls", GRAVITY_MODELS)
def test_gravity_sklearn_api(cls):
    model = cls(beta=1.0, offset=250.0, min_stays=1, random_state=0)
    if cls is HistoryGravityBaseline:
        model.set_params(history_weight=0.5, popularity_weight=0.1, recency_weight=1.0)
    params = model.get_params()
    assert {"beta", "offset", "offset_grid", "selection", "validation_fraction", "max_fit_targets",
            "random_state", "window_days", "min_stays", "max_tokens", "city_tz", "encoder"} <= set(params)
    with pytest.raises(NotFittedError):
        model.predict(TEST)
    assert model.fit(TRAIN) is model and model.partial_fit(TEST) is model
    fresh = clone(model)
    assert not hasattr(fresh, "encoder_") and fresh.get_params() == params
    again = pickle.loads(pickle.dumps(model))
    assert again.predict(TEST).tolist() == model.predict(TEST).tolist()
    pd.testing.assert_series_equal(again.target_ranks(TEST), model.target_ranks(TEST))
    # fitted (not given) parameters: clone and pickle keep the fit
    X = simulate_gravity(beta=2.0, offset=500.0, history_weight=0.3, n_singles=2000, n_movers=300)
    fitted_model = cls(min_stays=2, random_state=0, offset_grid=(250.0, 500.0), encoder=closed()).fit(X)
    copy = pickle.loads(pickle.dumps(fitted_model))
    assert copy.beta_ == fitted_model.beta_ and copy.offset_ == fitted_model.offset_
    pd.testing.assert_frame_equal(copy.search_results_, fitted_model.search_results_)
    # the same random_state gives the same fit
    assert clone(fitted_model).fit(X).beta_ == fitted_model.beta_


@pytest.mark.parametrize("params, match", [
    ({"beta": -1.0}, "beta"), ({"offset": 0.0}, "offset"), ({"offset_grid": ()}, "offset_grid"),
    ({"offset_grid": (100.0, -5.0)}, "offset_grid"), ({"selection": "mrr"}, "selection"),
    ({"validation_fraction": 1.0}, "validation_fraction"), ({"max_fit_targets": 0}, "max_fit_targets"),
    ({"combine": "product"}, "combine"), ({"history_weight": 1.0}, "history_weight"),
    ({"popularity_weight": -0.1}, "popularity_weight"), ({"recency_weight": float("nan")}, "recency_weight"),
])
def test_gravity_invalid_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        HistoryGravityBaseline(min_stays=1, **params).fit(TRAIN)


def test_gravity_without_held_out_targets_says_how_to_fix():
    # every user has one visit: no held-out window has a next visit
    X = gvisits({1: "A", 2: "B", 3: "C", 4: "D", 5: "A"})
    model = GravityBaseline(min_stays=1)
    with pytest.raises(ValueError, match="min_stays"):
        model.fit(X)
    assert not hasattr(model, "encoder_")      # not left half-fitted
    # with every parameter given there is nothing to fit
    assert GravityBaseline(beta=1.0, offset=100.0, min_stays=1).fit(X).predict(X).shape == (5,)


def test_gravity_held_out_users_drawn_again_among_users_with_a_window():
    # eight one-visit users and two movers: with random_state=2 the 20 % held out (2 of 10) are
    # one-visit users, who have no window of min_stays=3; one of the two movers is held out instead
    X = gvisits({**{u: "ABCDABCD"[u - 1] for u in range(1, 9)}, 10: "ABCAB", 11: "CCBAD"})
    model = GravityBaseline(min_stays=3, random_state=2, encoder=closed())
    with pytest.warns(DataWarning, match=r"none of the 2 users held out .*; 1 of the 2 users that have one is held out instead"):
        model.fit(X)
    assert model.n_fit_targets_ == 4                 # one mover's 5 visits: 4 targets
    # a draw that holds out a mover already is kept, without a warning
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*none of the .* users held out", category=DataWarning)
        assert GravityBaseline(min_stays=3, random_state=0, encoder=closed()).fit(X).n_fit_targets_ == 4


def test_gravity_redraw_counts_users_with_a_target_and_never_fails_on_few_users():
    one_visit = [dict(user_id=u, day=0, slot=10, x=u % 4, y=0) for u in range(10)]
    movers = [dict(user_id=100 + j, day=0, slot=10 + t, x=(t * 3 + j) % 5, y=t % 2)
              for j, n in enumerate([7, 6]) for t in range(n)]
    X = pd.DataFrame(one_visit + movers)
    # min_stays=1: a one-visit user has a window but no target; the redraw must skip such users
    with pytest.warns(DataWarning, match="users that have one is held out instead") as record:
        model = GravityBaseline(min_stays=1, random_state=1).fit(X)
    assert model.n_fit_targets_ in (5, 6)                    # one mover held out: 6 or 7 visits
    redraw = [w for w in record if "held out instead" in str(w.message)]
    assert len(redraw) == 1 and redraw[0].filename == __file__    # the warning points at the caller
    # a share that would hold out every eligible user of a few: still one at least, no sklearn error
    X3 = pd.DataFrame(one_visit[:8] + movers)
    with pytest.warns(DataWarning, match="held out instead"):
        GravityBaseline(min_stays=3, validation_fraction=0.7, random_state=2).fit(X3)
    # a first draw of nearly every user keeps one to count popularity on
    assert len(GravityBaseline(min_stays=2, validation_fraction=0.99, random_state=0).fit(X).search_results_) == 6


# --------------------------------------------------------------------------------------------------
# real data: YJMob100K city A, first 300 users train, next 100 test
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def yjmob_split(data_home):
    v = load_yjmob100k("A").visits
    users = v["user_id"].unique()
    return v[v["user_id"].isin(users[:300])], v[v["user_id"].isin(users[300:400])]


def test_real_data_history_beats_markov_beats_popularity(yjmob_split):
    train, test = yjmob_split
    acc = {cls.__name__: cls().fit(train).score(test) for cls in BASELINES}
    # docs/method.rst, "What the public data shows", on the full data: .213 / .037 / .001; on this slice (measured):
    # history .145, Markov .024, popularity .0004
    assert acc["HistoryFrequencyBaseline"] > 0.10
    assert acc["HistoryFrequencyBaseline"] > 3 * acc["MarkovBaseline"]
    assert acc["MarkovBaseline"] > 0.01
    assert acc["MarkovBaseline"] > 10 * acc["PopularityBaseline"]
    assert acc["PopularityBaseline"] < 0.01


@pytest.mark.slow
def test_real_data_history_gravity_ranks_better_than_history_frequency(yjmob_split):
    from trajmoe.metrics import mean_reciprocal_rank

    train, test = yjmob_split
    model = HistoryGravityBaseline(offset=1000.0, random_state=0).fit(train)
    # measured on this slice (fitted on 20 % held-out training users): beta 2.9, history weight .33,
    # popularity weight ~0, recency weight ~4; Acc@1 .196 / MRR .315 against .203 / .303 for history
    # frequency. On all 1,000 users of city A (validation users): Acc@1 .224 / MRR .344 against
    # .223 / .325.
    assert 2.0 < model.beta_ < 4.0 and 0.2 < model.history_weight_ < 0.5
    ranks = model.target_ranks(test).to_numpy()
    baseline = HistoryFrequencyBaseline().fit(train).target_ranks(test).to_numpy()
    assert len(ranks) == len(baseline)
    assert accuracy_at_k(ranks, 1) > 0.18
    assert mean_reciprocal_rank(ranks) > mean_reciprocal_rank(baseline) + 0.005

def test_gravity_fit_does_not_depend_on_the_order_of_the_batches(yjmob_split, monkeypatch):
    # max_fit_targets draws the held-out targets by index: the tokens are laid out in the order of
    # their visits, not of the batches (which _iter_batches builds by window length)
    train, _ = yjmob_split
    train = train[train["user_id"].isin(train["user_id"].unique()[:60])]
    params = dict(offset=1000.0, random_state=0, max_fit_targets=200)
    fitted = [HistoryGravityBaseline(**params).fit(train)]
    batches = HistoryGravityBaseline._iter_batches
    monkeypatch.setattr(HistoryGravityBaseline, "_iter_batches", lambda self, w: reversed(list(batches(self, w))))
    fitted.append(HistoryGravityBaseline(**params).fit(train))
    assert fitted[0].n_fit_targets_ == 200
    names = ("beta_", "history_weight_", "popularity_weight_", "recency_weight_", "log_likelihood_")
    assert [getattr(fitted[1], n) for n in names] == [getattr(fitted[0], n) for n in names]


def test_cross_val_score_and_grid_search_with_user_groups():
    from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score

    X = pd.concat([TRAIN, TEST], ignore_index=True)
    scores = cross_val_score(HistoryFrequencyBaseline(min_stays=1), X, groups=X["user_id"], cv=GroupKFold(2))
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    search = GridSearchCV(MarkovBaseline(min_stays=1), {"window_days": [1, 3]}, cv=GroupKFold(2))
    search.fit(X, groups=X["user_id"])
    assert search.best_params_["window_days"] in (1, 3)
    assert search.best_estimator_.predict(TEST).shape == (len(TEST),)


@pytest.mark.filterwarnings("ignore::trajmoe.exceptions.SharedUsersWarning")
@pytest.mark.parametrize("cls", BASELINES)
def test_exact_duplicate_rows_are_one_visit_and_share_their_prediction(cls):
    """An exact duplicate row is dropped by the estimator as by its encoder: the model fitted with
    it is the model fitted without it (no Markov self-transition, no count), the duplicate is no
    target, and predict still returns one row per input row, the duplicate getting the
    prediction of the row it repeats."""
    from trajmoe.exceptions import DataWarning

    doubled = pd.concat([TRAIN, TRAIN.iloc[[1, 1, 7]]]).sort_index(kind="stable")
    model = fitted(cls)
    with pytest.warns(DataWarning, match="3 exact duplicate rows.*dropped"):
        twin = cls(min_stays=1, encoder=closed()).fit(doubled)
    assert twin.encoder_.n_excluded_["city"]["duplicate_visits"] == 3
    assert twin.encoder_.location_table("city").equals(model.encoder_.location_table("city"))
    if cls is MarkovBaseline:
        pd.testing.assert_series_equal(twin.transitions_, model.transitions_)
    with pytest.warns(DataWarning, match=r"3 exact duplicate rows .* at rows \[1, 1, 7\].*the row it repeats"):
        labels, scores = twin.predict_topk(doubled, k=2)
    assert labels.shape == (len(doubled), 2)
    expected_labels, expected_scores = model.predict_topk(TRAIN, k=2)
    positions = TRAIN.index.get_indexer(doubled.index)       # every row of doubled: its row of TRAIN
    np.testing.assert_array_equal(labels, expected_labels[positions])
    np.testing.assert_array_equal(scores, expected_scores[positions])
    with pytest.warns(DataWarning, match="exact duplicate"):
        ranks = twin.target_ranks(doubled)
    pd.testing.assert_series_equal(ranks, model.target_ranks(TRAIN))
