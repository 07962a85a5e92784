"""Tests of trajmoe.model_selection: user splits, city splitters and cross_city_validate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator
from sklearn.model_selection import cross_val_score

from trajmoe.metrics import get_scorer
from trajmoe.model_selection import (
    FewShotCitySplit,
    LeaveOneCityOut,
    UserKFold,
    cross_city_validate,
    train_test_users,
)

USERS_PER_CITY = {"a": 50, "b": 20, "c": 10}


def make_visits(seed=0, users_per_city=USERS_PER_CITY):
    """Synthetic visits: user ids overlap between cities (ids are city-local), 1-5 visits each.

    Column ``rank`` is the rank a fake estimator reports for the visit (1 for even users, else 2).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for city, n_users in users_per_city.items():
        for user in range(n_users):
            for v in range(int(rng.integers(1, 6))):
                rows.append((user, city, v, int(rng.integers(0, 48)), 1, 1, 1 if user % 2 == 0 else 2))
    X = pd.DataFrame(rows, columns=["user_id", "city", "day", "slot", "x", "y", "rank"])
    X.index = rng.permutation(len(X)) + 1000  # non-trivial labels
    return X.sample(frac=1.0, random_state=seed)  # shuffled rows


def keys(X):
    return set(zip(X["city"], X["user_id"]))


# --------------------------------------------------------------------------------------------------
# train_test_users
# --------------------------------------------------------------------------------------------------
def test_train_test_users_by_user_within_city():
    X = make_visits()
    before = X.copy()
    tr, va, te = train_test_users(X, random_state=0)
    pd.testing.assert_frame_equal(X, before)  # caller's frame untouched
    allpos = np.concatenate([tr, va, te])
    assert sorted(allpos.tolist()) == list(range(len(X)))  # every row once
    for idx in (tr, va, te):
        assert (np.diff(idx) > 0).all()
    k_tr, k_va, k_te = keys(X.iloc[tr]), keys(X.iloc[va]), keys(X.iloc[te])
    assert not (k_tr & k_va) and not (k_tr & k_te) and not (k_va & k_te)
    # 70/10/20 of each city's users: a 50 -> 35/5/10, b 20 -> 14/2/4, c 10 -> 7/1/2
    for city, (n_tr, n_va, n_te) in {"a": (35, 5, 10), "b": (14, 2, 4), "c": (7, 1, 2)}.items():
        assert sum(c == city for c, _ in k_tr) == n_tr
        assert sum(c == city for c, _ in k_va) == n_va
        assert sum(c == city for c, _ in k_te) == n_te


def test_train_test_users_repeatable_and_order_independent():
    X = make_visits()
    a = train_test_users(X, random_state=3)
    b = train_test_users(X, random_state=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = train_test_users(X, random_state=4)
    assert keys(X.iloc[a[2]]) != keys(X.iloc[c[2]])
    # the same users go to test whatever the row order
    X2 = X.sample(frac=1.0, random_state=99)
    d = train_test_users(X2, random_state=3)
    assert keys(X2.iloc[d[2]]) == keys(X.iloc[a[2]])
    assert keys(X2.iloc[d[1]]) == keys(X.iloc[a[1]])


def test_train_test_users_without_city_and_without_val():
    X = pd.DataFrame({"user_id": np.repeat(np.arange(10), 2), "day": 0, "slot": 0, "x": 1, "y": 1})
    tr, va, te = train_test_users(X, test_size=0.3, val_size=0.0, random_state=0)
    assert len(va) == 0
    assert X.iloc[tr]["user_id"].nunique() == 7 and X.iloc[te]["user_id"].nunique() == 3
    assert not set(X.iloc[tr]["user_id"]) & set(X.iloc[te]["user_id"])


def test_train_test_users_errors():
    X = make_visits(users_per_city={"a": 10, "tiny": 2})
    with pytest.raises(ValueError, match="'tiny' has 2 user"):
        train_test_users(X, random_state=0)
    train_test_users(X, val_size=0, random_state=0)  # 2 users suffice without validation
    for kw, match in [
        ({"test_size": 0}, "test_size"),
        ({"test_size": 1.0}, "test_size"),
        ({"val_size": -0.1}, "val_size"),
        ({"test_size": 0.5, "val_size": 0.5}, "< 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            train_test_users(X, **kw)
    with pytest.raises(ValueError, match="user_id"):
        train_test_users(X.drop(columns="user_id"))
    with pytest.raises(TypeError, match="DataFrame"):
        train_test_users(X.to_numpy())


def test_missing_users_and_cities_are_named_by_every_splitter():
    """A missing city was a TypeError deep in a sort or sklearn's 'Input contains NaN'; a missing
    user a user of its own in UserKFold."""
    X = make_visits(users_per_city={"a": 10, "b": 10})
    no_city = X.astype({"city": object})
    no_city.loc[no_city.index[[4, 9]], "city"] = np.nan
    for name, split in [("train_test_users", lambda Z: train_test_users(Z, random_state=0)),
                        ("FewShotCitySplit", lambda Z: next(FewShotCitySplit("a", random_state=0).split(Z))),
                        ("LeaveOneCityOut", lambda Z: next(LeaveOneCityOut().split(Z))),
                        ("UserKFold", lambda Z: next(UserKFold(2).split(Z)))]:
        with pytest.raises(ValueError, match=rf"{name}: column 'city' has 2 missing values at rows "
                                             rf"\[{no_city.index[4]}, {no_city.index[9]}\]"):
            split(no_city)
    no_user = X.astype({"user_id": object})
    no_user.loc[no_user.index[7], "user_id"] = None
    with pytest.raises(ValueError, match=r"UserKFold: column 'user_id' has 1 missing value at rows"):
        next(UserKFold(2).split(no_user))


# --------------------------------------------------------------------------------------------------
# LeaveOneCityOut
# --------------------------------------------------------------------------------------------------
class ColumnRanker(BaseEstimator):
    """Fake estimator: ranks come from the 'rank' column; records the cities it was fitted on."""

    def __init__(self, shift=0):
        self.shift = shift

    def fit(self, X, y=None):
        self.cities_ = sorted(set(X["city"]))
        return self

    def target_ranks(self, X, protocol="all"):
        return X["rank"] + self.shift


def test_leave_one_city_out_splits():
    X = make_visits()
    cv = LeaveOneCityOut()
    assert cv.get_n_splits(X) == 3
    assert repr(cv) == "LeaveOneCityOut()"
    held_out = []
    for train, test in cv.split(X):
        test_cities = set(X["city"].iloc[test])
        assert len(test_cities) == 1
        assert not test_cities & set(X["city"].iloc[train])
        assert len(train) + len(test) == len(X)
        held_out.append(test_cities.pop())
    assert held_out == ["a", "b", "c"]
    # explicit groups win over the column
    groups = np.where(X["city"] == "a", "g1", "g2")
    assert cv.get_n_splits(X, groups=groups) == 2


def test_leave_one_city_out_in_cross_val_score():
    X = make_visits()
    scores = cross_val_score(ColumnRanker(), X, cv=LeaveOneCityOut(), scoring=get_scorer("acc@1"))
    expected = [np.mean(X.loc[X["city"] == c, "rank"] == 1) for c in ["a", "b", "c"]]
    np.testing.assert_allclose(scores, expected)


def test_leave_one_city_out_errors():
    X = make_visits()
    with pytest.raises(ValueError, match="no 'city' column"):
        list(LeaveOneCityOut().split(X.drop(columns="city")))
    with pytest.raises(ValueError, match="needs X"):
        LeaveOneCityOut().get_n_splits()
    with pytest.raises(ValueError):
        list(LeaveOneCityOut().split(X[X["city"] == "a"]))  # one city: nothing to leave out


# --------------------------------------------------------------------------------------------------
# FewShotCitySplit
# --------------------------------------------------------------------------------------------------
def test_few_shot_split_three():
    X = make_visits()
    cv = FewShotCitySplit("a", fraction=0.1, random_state=0)
    assert cv.get_n_splits() == 1
    (source, finetune, test), = list(cv.split_three(X))
    assert sorted(source.tolist()) == np.flatnonzero(X["city"] != "a").tolist()
    assert set(X["city"].iloc[finetune]) == {"a"} and set(X["city"].iloc[test]) == {"a"}
    ft_users, te_users = set(X["user_id"].iloc[finetune]), set(X["user_id"].iloc[test])
    # a has 50 users: 10 test, 40 training; 10 % of 40 = 4 fine-tuning users
    assert len(te_users) == 10 and len(ft_users) == 4
    assert not ft_users & te_users
    # all visits of the chosen users are included
    assert len(finetune) == X["user_id"].iloc[np.flatnonzero(X["city"] == "a")].isin(ft_users).sum()
    # split() = (source + finetune, test)
    (train2, test2), = list(cv.split(X))
    np.testing.assert_array_equal(train2, np.sort(np.concatenate([source, finetune])))
    np.testing.assert_array_equal(test2, test)


def test_few_shot_fraction_counts_and_fixed_test():
    X = make_visits()
    out = {}
    for frac in (0.01, 0.05, 0.1, 0.5, 1.0):
        (_, ft, te), = list(FewShotCitySplit("a", fraction=frac, random_state=7).split_three(X))
        out[frac] = (set(X["user_id"].iloc[ft]), set(X["user_id"].iloc[te]))
    # round(fraction * 40), at least one user
    assert {f: len(v[0]) for f, v in out.items()} == {0.01: 1, 0.05: 2, 0.1: 4, 0.5: 20, 1.0: 40}
    tests = [v[1] for v in out.values()]
    assert all(t == tests[0] for t in tests)  # test users do not depend on the fraction
    assert not any(v[0] & tests[0] for v in out.values())  # fine-tuning users are training users
    assert len(out[1.0][0] | tests[0]) == 50


def test_few_shot_repeatable_and_several_splits():
    X = make_visits()
    a = [tuple(map(tuple, s)) for s in FewShotCitySplit("b", 0.25, n_splits=4, random_state=1).split_three(X)]
    b = [tuple(map(tuple, s)) for s in FewShotCitySplit("b", 0.25, n_splits=4, random_state=1).split_three(X)]
    assert a == b and len(a) == 4
    assert len({s[2] for s in a}) == 1  # same test users in every split
    assert len({s[1] for s in a}) > 1  # different fine-tuning samples
    for _, ft, te in a:
        assert len(set(X["user_id"].iloc[list(ft)])) == 4  # 25 % of 16 training users
        assert not set(X["user_id"].iloc[list(ft)]) & set(X["user_id"].iloc[list(te)])


def test_few_shot_finetune_samples_is_the_split_draw():
    """finetune_samples draws among the target users of X exactly as split_three does among the
    training users: numpy's default_rng(seed).choice over the users sorted by id (on the
    benchmarks' frames, whose users come sorted, the draw they made before they used this class),
    whatever the row order."""
    X = make_visits()
    cv = FewShotCitySplit("a", fraction=0.2, n_splits=3, random_state=5)
    _, _, test = next(cv.split_three(X))
    train_rows = np.setdiff1d(np.flatnonzero(X["city"] == "a"), test)
    from_split = [ft for _, ft, _ in cv.split_three(X)]
    from_samples = [train_rows[rows] for rows in cv.finetune_samples(X.iloc[train_rows])]
    for a, b in zip(from_split, from_samples, strict=True):
        np.testing.assert_array_equal(a, b)
    # the rule itself, on a frame whose users appear out of order
    users = X["user_id"].iloc[train_rows]
    rng = np.random.default_rng(5)
    for rows in cv.finetune_samples(X.iloc[train_rows]):
        chosen = rng.choice(np.sort(users.unique()), size=round(0.2 * users.nunique()), replace=False)
        assert set(users.iloc[rows]) == set(chosen)
        assert users.iloc[rows].isin(chosen).sum() == users.isin(chosen).sum()  # every visit of them
    # the same visits in another row order: the same users drawn (split_three too)
    shuffled = X.sample(frac=1, random_state=3)
    for a, b in zip(cv.split_three(X), cv.split_three(shuffled), strict=True):
        for part_a, part_b in zip(a, b, strict=True):
            assert set(X["user_id"].iloc[part_a]) == set(shuffled["user_id"].iloc[part_b])
    with pytest.raises(ValueError, match="target_city 'zz' is not in X"):
        next(FewShotCitySplit("zz").finetune_samples(X))


def test_few_shot_in_cross_val_score():
    X = make_visits()
    scores = cross_val_score(
        ColumnRanker(), X, cv=FewShotCitySplit("c", 0.5, n_splits=2, random_state=0), scoring=get_scorer("mrr")
    )
    (_, _, te), = list(FewShotCitySplit("c", 0.5, random_state=0).split_three(X))
    expected = np.mean(1.0 / X["rank"].iloc[te])
    np.testing.assert_allclose(scores, [expected, expected])


def test_few_shot_errors():
    X = make_visits()
    with pytest.raises(ValueError, match=r"available cities: \['a', 'b', 'c'\]"):
        list(FewShotCitySplit("zz").split_three(X))
    for frac in (0, -0.1, 1.5, "half"):
        with pytest.raises(ValueError, match="fraction"):
            FewShotCitySplit("a", fraction=frac)
    with pytest.raises(ValueError, match="test_size"):
        FewShotCitySplit("a", test_size=1.0)
    with pytest.raises(ValueError, match="n_splits"):
        FewShotCitySplit("a", n_splits=0)
    with pytest.raises(ValueError, match="source city"):
        list(FewShotCitySplit("a").split_three(X[X["city"] == "a"]))
    one_user = make_visits(users_per_city={"a": 5, "solo": 1})
    with pytest.raises(ValueError, match="'solo' has 1 user"):
        list(FewShotCitySplit("solo").split_three(one_user))


# --------------------------------------------------------------------------------------------------
# cross_city_validate
# --------------------------------------------------------------------------------------------------
class RecordingEstimator(BaseEstimator):
    """Fake estimator recording the (city, user) keys of everything it sees, in a class-level log."""

    log: list = []

    def __init__(self, shift=0):
        self.shift = shift

    def fit(self, X, y=None):
        self.fit_keys_ = keys(X)
        self.log.append(("fit", self.fit_keys_, X.index))
        return self

    def partial_fit(self, X, y=None):
        assert hasattr(self, "fit_keys_"), "partial_fit before fit"
        self.log.append(("partial_fit", keys(X), X.index))
        return self

    def target_ranks(self, X, protocol="all"):
        self.log.append(("target_ranks", keys(X), X.index, protocol))
        ranks = X["rank"] + self.shift
        return ranks if protocol == "all" else ranks.groupby(X["user_id"]).tail(1)


def test_cross_city_validate_no_leak_and_fraction():
    X = make_visits()
    before = X.copy()
    RecordingEstimator.log = []
    est = RecordingEstimator()
    res = cross_city_validate(est, X, fraction=0.1, scoring=("acc@1", "mrr", "ndcg@3"), random_state=0)
    pd.testing.assert_frame_equal(X, before)
    assert not hasattr(est, "fit_keys_")  # the given estimator is cloned, never fitted
    assert list(res.columns) == [
        "target_city", "split", "fraction", "protocol", "n_source_visits", "n_finetune_users",
        "n_finetune_visits", "n_test_users", "n_targets", "acc@1", "mrr", "ndcg@3",
    ]  # fmt: skip
    assert res["target_city"].tolist() == ["a", "b", "c"]
    log = RecordingEstimator.log
    assert [entry[0] for entry in log] == ["fit", "partial_fit", "target_ranks"] * 3
    expected_ft = {"a": 4, "b": 2, "c": 1}  # round(0.1 * n_train_users): 40, 16, 8 -> 4, 2, 1
    expected_test = {"a": 10, "b": 4, "c": 2}
    for i, city in enumerate(["a", "b", "c"]):
        (_, fit_k, _), (_, ft_k, _), (_, te_k, te_idx, protocol) = log[3 * i : 3 * i + 3]
        assert protocol == "all"
        assert {c for c, _ in fit_k} == set(USERS_PER_CITY) - {city}  # target excluded
        assert fit_k == keys(X[X["city"] != city])  # all source data
        assert {c for c, _ in ft_k} == {city} and {c for c, _ in te_k} == {city}
        assert len(ft_k) == expected_ft[city] and len(te_k) == expected_test[city]
        assert not te_k & fit_k and not te_k & ft_k  # no test user ever fitted
        row = res.iloc[i]
        assert row["n_finetune_users"] == expected_ft[city]
        assert row["n_test_users"] == expected_test[city]
        assert row["n_targets"] == len(te_idx)
        assert row["n_source_visits"] == (X["city"] != city).sum()
        r = X.loc[te_idx, "rank"]
        assert row["acc@1"] == pytest.approx(np.mean(r == 1))
        assert row["mrr"] == pytest.approx(np.mean(1.0 / r))
        assert row["ndcg@3"] == pytest.approx(np.mean(1.0 / np.log2(r + 1)))


def test_cross_city_validate_options_and_repeatability():
    X = make_visits()
    RecordingEstimator.log = []
    res = cross_city_validate(
        RecordingEstimator(), X, target_cities="b", fraction=0.5, protocol="last",
        scoring="acc@1", random_state=2, n_splits=3,
    )  # fmt: skip
    assert res["target_city"].tolist() == ["b"] * 3 and res["split"].tolist() == [0, 1, 2]
    assert (res["protocol"] == "last").all() and (res["fraction"] == 0.5).all()
    assert (res["n_finetune_users"] == 8).all()
    assert (res["n_targets"] == 4).all()  # one last target per test user
    res2 = cross_city_validate(
        RecordingEstimator(), X, target_cities=["b"], fraction=0.5, protocol="last",
        scoring="acc@1", random_state=2, n_splits=3,
    )  # fmt: skip
    pd.testing.assert_frame_equal(res, res2)


def test_cross_city_validate_errors():
    X = make_visits()
    with pytest.raises(ValueError, match=r"available cities: \['a', 'b', 'c'\]"):
        cross_city_validate(RecordingEstimator(), X, target_cities=["a", "paris"])
    with pytest.raises(ValueError, match="fraction"):
        cross_city_validate(RecordingEstimator(), X, fraction=0)
    with pytest.raises(ValueError, match="fraction"):
        cross_city_validate(RecordingEstimator(), X, fraction=1.01)
    with pytest.raises(ValueError, match="unknown metric"):
        cross_city_validate(RecordingEstimator(), X, scoring=("acc@1", "f1"))
    with pytest.raises(ValueError, match="protocol"):
        cross_city_validate(RecordingEstimator(), X, protocol="first")
    with pytest.raises(ValueError, match="at least 2 cities"):
        cross_city_validate(RecordingEstimator(), X[X["city"] == "a"])
    with pytest.raises(ValueError, match="target_cities is empty"):
        cross_city_validate(RecordingEstimator(), X, target_cities=[])
    with pytest.raises(ValueError, match="pois has no 'city' column"):
        cross_city_validate(RecordingEstimator(), X, pois=pd.DataFrame({"lat": [0.0], "lon": [0.0]}))
    with pytest.raises(TypeError, match="pois must be a POI frame \\(DataFrame\\).*got ndarray"):
        cross_city_validate(RecordingEstimator(), X, pois=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"target_cities names \['a'\] more than once"):
        cross_city_validate(RecordingEstimator(), X, target_cities=["a", "b", "a"])
    with pytest.raises(ValueError, match=r"scoring \['mrr_last'\]: .*protocol='last'.*without '_last'"):
        cross_city_validate(RecordingEstimator(), X, scoring=("acc@1", "mrr_last"))
    with pytest.raises(ValueError, match=r"scoring names a metric more than once: \['acc@1', 'ACC@1'\]"):
        cross_city_validate(RecordingEstimator(), X, scoring=("acc@1", "ACC@1"))
    with pytest.raises(TypeError, match="target_cities must be a city name or a list of them, got 7"):
        cross_city_validate(RecordingEstimator(), X, target_cities=7)
    with pytest.raises(TypeError, match="scoring must be a metric name or a list of them.*got None"):
        cross_city_validate(RecordingEstimator(), X, scoring=None)


def test_cross_city_validate_names_the_city_split_and_step_that_failed():
    """A fine-tuning sample without a window raised the estimator's bare message, which did not
    say which target, split or step failed."""

    class FailsToFineTune(RecordingEstimator):
        def partial_fit(self, X, y=None):
            raise ValueError("No training window: no user of X has enough visits.")

    with pytest.raises(ValueError, match=r"^cross_city_validate, target city 'a', split 0, fine-tuning on \d+ of "
                                         r"its users: No training window"):
        cross_city_validate(FailsToFineTune(), make_visits(), random_state=0)


def test_cross_city_validate_checks_every_target_before_the_first_fit():
    """A target with too few users to split is an error before any work on the others."""
    X = make_visits()
    solo = X[X["user_id"] == X.loc[X["city"] == "c", "user_id"].iloc[0]]
    X = pd.concat([X[X["city"] != "c"], solo[solo["city"] == "c"]], ignore_index=True)
    RecordingEstimator.log.clear()
    with pytest.raises(ValueError, match="target city 'c' has 1 user"):
        cross_city_validate(RecordingEstimator(), X, random_state=0)
    assert RecordingEstimator.log == []


class PoiRecordingEstimator(RecordingEstimator):
    """Records the cities of the POIs each call gets."""

    def fit(self, X, y=None, pois=None):
        self.log.append(("fit pois", None if pois is None else sorted(set(pois["city"]))))
        return super().fit(X)

    def partial_fit(self, X, y=None, pois=None):
        self.log.append(("partial_fit pois", None if pois is None else sorted(set(pois["city"]))))
        return super().partial_fit(X)


def test_cross_city_validate_gives_each_step_its_cities_pois():
    X = make_visits()
    pois = pd.DataFrame({"city": ["a", "b", "b", "c"], "lat": 0.0, "lon": 0.0, "category": "Food"})
    PoiRecordingEstimator.log = []
    cross_city_validate(PoiRecordingEstimator(), X, target_cities=["b", "c"], random_state=0, pois=pois)
    calls = [entry for entry in PoiRecordingEstimator.log if entry[0].endswith("pois")]
    assert calls == [("fit pois", ["a", "c"]), ("partial_fit pois", ["b"]),
                     ("fit pois", ["a", "b"]), ("partial_fit pois", ["c"])]
    # without a POI frame the estimator is called as before (no pois keyword)
    RecordingEstimator.log = []
    cross_city_validate(RecordingEstimator(), X, target_cities="b", random_state=0)


def test_user_kfold_keeps_each_user_in_one_fold():
    from trajmoe.model_selection import UserKFold

    X = pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 3, 1, 4], "city": ["a"] * 6 + ["b", "b"]})
    folds = list(UserKFold(n_splits=2).split(X))
    assert UserKFold(n_splits=2).get_n_splits(X) == 2 and len(folds) == 2
    users = X["city"] + ":" + X["user_id"].astype(str)
    for train, test in folds:
        assert not set(users.iloc[train]) & set(users.iloc[test])
        assert len(train) + len(test) == len(X)
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(X)))
    with pytest.raises(ValueError, match="user_id"):
        next(UserKFold(n_splits=2).split(X.drop(columns="user_id")))


def test_user_kfold_folds_do_not_depend_on_row_order_or_id_type():
    # 40 users of 5 visits each: GroupKFold deals groups of equal size by their numbers, which
    # once followed each user's first row
    X = pd.DataFrame({"user_id": np.repeat(np.arange(40), 5), "city": "a"})

    def folds(frame):
        return [sorted(map(int, set(frame.iloc[test]["user_id"]))) for _, test in UserKFold(n_splits=4).split(frame)]

    ref = folds(X)
    assert folds(X.sample(frac=1.0, random_state=1)) == ref
    assert folds(X.assign(user_id=X["user_id"].astype(str))) == ref
    assert sorted(sum(ref, [])) == list(range(40))
