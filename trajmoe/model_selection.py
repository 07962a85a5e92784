"""City-aware splitters and the cross-city (pre-train -> fine-tune -> score) validation helper.

Rows of a visit frame are visits, not samples: every split here keeps all visits of a user together
(a user's trajectory never leaks from training into evaluation), and cities are the unit of
transfer. The heavy lifting is done by scikit-learn's own splitters
(:class:`~sklearn.model_selection.GroupShuffleSplit`,
:class:`~sklearn.model_selection.LeaveOneGroupOut`); this module only chooses the groups.

User identity is city-local: the pair ``(city, user_id)`` is one user, since the data sets of
different cities number their users independently.

References
----------
- Han, Yuan, Chen, Ding, Li. "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human
  Mobility Modeling", arXiv:2505.18670 (2025).
- ``docs/MODEL.md`` sections 4 (transfer protocol: fine-tune one epoch on 1 %, 5 % or 10 % of
  the target city's users, sampled at random with a seed) and 5 (evaluation) of this project.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import BaseCrossValidator, GroupShuffleSplit, LeaveOneGroupOut
from sklearn.utils import check_random_state

from trajmoe.metrics import _check_protocol, _parse_metric_name, evaluate
from trajmoe.schema import CITY, DEFAULT_CITY, USER

__all__ = [
    "train_test_users",
    "LeaveOneCityOut",
    "FewShotCitySplit",
    "cross_city_validate",
]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _check_visits(X, caller: str) -> None:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(
            f"{caller} needs a pandas DataFrame of visits (one row per visit) with a {USER!r} "
            f"column, got {type(X).__name__}."
        )
    if len(X) == 0:
        raise ValueError(f"{caller}: the visit frame is empty.")
    if USER not in X.columns:
        raise ValueError(
            f"{caller}: the visit frame has no {USER!r} column (columns: {list(X.columns)[:10]}). "
            f"Rename the column identifying the person to {USER!r}."
        )


def _city_values(X: pd.DataFrame) -> np.ndarray:
    """City of every row as an object array of str (``DEFAULT_CITY`` when the column is absent)."""
    if CITY in X.columns:
        return X[CITY].astype(str).to_numpy(dtype=object)
    return np.full(len(X), DEFAULT_CITY, dtype=object)


def _user_codes(users: pd.Series) -> np.ndarray:
    """Integer code of each row's user, independent of row order where the ids are sortable."""
    try:
        codes, _ = pd.factorize(users, sort=True)
    except TypeError:  # unsortable mixture of id types
        codes, _ = pd.factorize(users.astype(str), sort=True)
    if (codes < 0).any():
        raise ValueError(
            f"{USER!r} has {int((codes < 0).sum())} missing values; every visit needs a user."
        )
    return codes


def _seed(random_state) -> int:
    """One integer seed: the int itself, else drawn from a RandomState / fresh entropy."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _round_count(fraction: float, n: int) -> int:
    return int(np.floor(fraction * n + 0.5))


def _check_fraction(name, value, *, low_open=True, high_closed=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a float, got {value!r}.")
    ok = (0 < value if low_open else 0 <= value) and (value <= 1 if high_closed else value < 1)
    if not ok:
        lo = "(0" if low_open else "[0"
        hi = "1]" if high_closed else "1)"
        raise ValueError(f"{name} must be in {lo}, {hi}, got {value!r}.")
    return float(value)


def _available(cities: np.ndarray) -> list[str]:
    return sorted(set(cities.tolist()))


# --------------------------------------------------------------------------------------------------
# train / validation / test by users
# --------------------------------------------------------------------------------------------------
def train_test_users(X, test_size=0.2, val_size=0.1, random_state=None):
    """Split visits into train / validation / test parts by USERS, within each city.

    Each city's users are shuffled and split with
    :class:`~sklearn.model_selection.GroupShuffleSplit` (groups = users), so all visits of a user
    end up in exactly one part, and every city contributes ~70 / 10 / 20 % of its users (default)
    to train / validation / test.

    Parameters
    ----------
    X : DataFrame of shape (n_visits, n_columns)
        Visit frame with a ``user_id`` column and optionally a ``city`` column (absent = one city).
        Not modified. Row order does not matter for which users go where.
    test_size : float, default 0.2
        Fraction of each city's users in the test part, in ``(0, 1)``; the count is
        ``round(test_size * n_users)``, at least 1.
    val_size : float, default 0.1
        Fraction of each city's users in the validation part, in ``[0, 1)``; the count is
        ``round(val_size * n_users)`` (at least 1 when ``val_size > 0``); 0 gives an empty
        validation part.
    random_state : int, RandomState instance or None, default None
        Seed of the shuffles. An int gives the same split on every call (each city is shuffled
        with this seed); None draws a fresh one.

    Returns
    -------
    train_idx, val_idx, test_idx : ndarray of shape (n_part,), int
        Sorted row POSITIONS into ``X`` (use ``X.iloc[idx]``). Together they cover every row once.

    Raises
    ------
    TypeError
        If ``X`` is not a DataFrame.
    ValueError
        If ``X`` is empty or lacks ``user_id``; if the sizes are outside their ranges or
        ``test_size + val_size >= 1``; if a city has too few users to leave at least one user in
        every non-empty part (the message names the city and its user count).

    References
    ----------
    .. [1] ``docs/MODEL.md`` section 6 (users split 70/10/20) and section 5; arXiv:2505.18670.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"user_id": [u for u in range(10) for _ in range(3)],
    ...                   "day": 0, "slot": 0, "x": 1, "y": 1})
    >>> tr, va, te = train_test_users(X, random_state=0)
    >>> X.iloc[tr]["user_id"].nunique(), X.iloc[va]["user_id"].nunique(), X.iloc[te]["user_id"].nunique()
    (7, 1, 2)
    """
    test_size = _check_fraction("test_size", test_size)
    val_size = _check_fraction("val_size", val_size, low_open=False)
    if test_size + val_size >= 1:
        raise ValueError(
            f"test_size + val_size must be < 1 to leave training users, got {test_size} + {val_size}."
        )
    _check_visits(X, "train_test_users")
    cities = _city_values(X)
    seed = _seed(random_state)
    parts: tuple[list, list, list] = ([], [], [])
    for city in _available(cities):
        pos = np.flatnonzero(cities == city)
        groups = _user_codes(X[USER].iloc[pos])
        n_users = int(groups.max()) + 1
        n_test = max(1, _round_count(test_size, n_users))
        n_val = max(1, _round_count(val_size, n_users)) if val_size > 0 else 0
        if n_users - n_test - n_val < 1:
            need = 3 if val_size > 0 else 2
            raise ValueError(
                f"city {city!r} has {n_users} user(s): too few to split into train"
                f"{'/validation' if val_size > 0 else ''}/test by users with test_size={test_size}, "
                f"val_size={val_size} (needs at least {need}). Drop the city or lower the sizes."
            )
        gss = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
        rest, test = next(gss.split(pos, groups=groups))
        if n_val:
            gss_val = GroupShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
            train, val = next(gss_val.split(rest, groups=groups[rest]))
            train, val = rest[train], rest[val]
        else:
            train, val = rest, np.empty(0, dtype=np.intp)
        for part, idx in zip(parts, (train, val, test)):
            part.append(pos[idx])
    return tuple(np.sort(np.concatenate(p)).astype(np.intp) for p in parts)


# --------------------------------------------------------------------------------------------------
# leave one city out
# --------------------------------------------------------------------------------------------------
class LeaveOneCityOut(LeaveOneGroupOut):
    """Leave-one-city-out cross-validator: train on all other cities, test on the held-out one.

    A :class:`~sklearn.model_selection.LeaveOneGroupOut` whose groups default to the ``city``
    column of ``X``, so it can be passed directly as ``cv=`` to
    :func:`~sklearn.model_selection.cross_val_score` or ``GridSearchCV`` with visit frames. Splits
    come in sorted city order.

    Methods
    -------
    split(X, y=None, groups=None)
        Yields ``(train, test)`` row positions: train = visits of all other cities, test = visits of
        the held-out city.
    get_n_splits(X=None, y=None, groups=None)
        Number of cities.

    Notes
    -----
    ``groups`` given explicitly (e.g. ``cross_val_score(..., groups=X["city"])``) wins over the
    ``city`` column.

    References
    ----------
    .. [1] ``docs/MODEL.md`` sections 4-5 (the target city is excluded from pre-training);
       arXiv:2505.18670.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"user_id": [1, 2, 3], "city": ["b", "a", "b"]})
    >>> [(tr.tolist(), te.tolist()) for tr, te in LeaveOneCityOut().split(X)]
    [([0, 2], [1]), ([1], [0, 2])]
    """

    @staticmethod
    def _city_groups(X, groups):
        if groups is not None:
            return groups
        if X is None:
            raise ValueError(
                "LeaveOneCityOut needs X (a visit frame with a 'city' column) or explicit groups."
            )
        if isinstance(X, pd.DataFrame) and CITY in X.columns:
            return X[CITY].astype(str).to_numpy(dtype=object)
        raise ValueError(
            f"LeaveOneCityOut: X has no {CITY!r} column and no groups were given; add the city of "
            f"each visit as column {CITY!r} or pass groups=..."
        )

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits (= number of distinct cities).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns), optional
            Visit frame with a ``city`` column (used when ``groups`` is None).
        y : object
            Ignored.
        groups : array-like of shape (n_visits,), optional
            City of each row; default ``X["city"]``.

        Returns
        -------
        int
            Number of cities.

        Raises
        ------
        ValueError
            If neither ``groups`` nor a ``city`` column is available.
        """
        return super().get_n_splits(X, y, self._city_groups(X, groups))

    def split(self, X, y=None, groups=None):
        """Generate ``(train, test)`` row positions, one split per held-out city.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame; its ``city`` column is the group when ``groups`` is None.
        y : object
            Ignored.
        groups : array-like of shape (n_visits,), optional
            City of each row; default ``X["city"]``.

        Yields
        ------
        train : ndarray of shape (n_train,), int
            Positions of the visits of all other cities.
        test : ndarray of shape (n_test,), int
            Positions of the visits of the held-out city.

        Raises
        ------
        ValueError
            If there is no city information or fewer than 2 cities.
        """
        yield from super().split(X, y, self._city_groups(X, groups))


# --------------------------------------------------------------------------------------------------
# few-shot transfer split
# --------------------------------------------------------------------------------------------------
class FewShotCitySplit(BaseCrossValidator):
    """Few-shot transfer split: source cities + a random fraction of the target city's users.

    The target city's users are split once (per ``random_state``) into training users and held-out
    test users (``test_size``); then, for each of ``n_splits`` repetitions, ``fraction`` of the
    training users are drawn at random (by users, with
    :class:`~sklearn.model_selection.GroupShuffleSplit`) for fine-tuning. All rows of the other
    cities are the source (pre-training) data.

    Parameters
    ----------
    target_city : str
        Name of the target city (compared with ``X["city"]`` as str).
    fraction : float, default 0.05
        Fraction of the target city's TRAINING users used for fine-tuning, in ``(0, 1]``
        (MODEL.md: 0.01, 0.05, 0.10). The count is ``round(fraction * n_train_users)``, at least 1.
        For a fixed ``random_state`` the fine-tuning users of a smaller fraction are a subset of
        those of a larger one, and the test users do not depend on ``fraction``.
    test_size : float, default 0.2
        Fraction of the target city's users held out for testing, in ``(0, 1)``; the count is
        ``round(test_size * n_users)``, at least 1.
    n_splits : int, default 1
        Number of random fine-tuning samples (e.g. to report mean and spread over seeds); the test
        users stay the same across them.
    random_state : int, RandomState instance or None, default None
        Seed. An int makes every call of :meth:`split` / :meth:`split_three` return the same
        splits.

    Raises
    ------
    ValueError
        (at construction and when splitting) if ``fraction`` is outside ``(0, 1]``,
        ``test_size`` outside ``(0, 1)`` or ``n_splits`` not a positive integer; when splitting,
        if ``target_city`` is not in ``X`` (the message lists the available cities), if there is no
        other (source) city, or if the target city has fewer than 2 users.

    See Also
    --------
    cross_city_validate : runs pre-train -> fine-tune -> score over these splits.

    References
    ----------
    .. [1] ``docs/MODEL.md`` section 4 (fine-tune on 1 %, 5 % or 10 % of the target city, sampled
       by users at random with a seed; the target city is excluded from pre-training);
       arXiv:2505.18670.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"user_id": list(range(10)) + [0, 1], "city": ["t"] * 10 + ["s"] * 2})
    >>> cv = FewShotCitySplit("t", fraction=0.25, random_state=0)
    >>> source, finetune, test = next(cv.split_three(X))
    >>> source.tolist(), len(finetune), len(test)
    ([10, 11], 2, 2)
    """

    def __init__(self, target_city, fraction=0.05, test_size=0.2, n_splits=1, random_state=None):
        self.target_city = target_city
        self.fraction = fraction
        self.test_size = test_size
        self.n_splits = n_splits
        self.random_state = random_state
        self._check_params()

    def _check_params(self):
        _check_fraction("fraction", self.fraction, high_closed=True)
        _check_fraction("test_size", self.test_size)
        if (
            isinstance(self.n_splits, bool)
            or not isinstance(self.n_splits, numbers.Integral)
            or self.n_splits < 1
        ):
            raise ValueError(f"n_splits must be a positive integer, got {self.n_splits!r}.")

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits (``n_splits``).

        Parameters
        ----------
        X, y, groups : object
            Ignored, for scikit-learn compatibility.

        Returns
        -------
        int
        """
        return int(self.n_splits)

    def split_three(self, X, y=None, groups=None):
        """Generate ``(source, finetune, test)`` row positions.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame with ``user_id`` and ``city`` columns. Not modified.
        y, groups : object
            Ignored (users and cities come from ``X``).

        Yields
        ------
        source : ndarray of shape (n_source,), int
            Sorted positions of all visits of the other cities.
        finetune : ndarray of shape (n_finetune,), int
            Sorted positions of all visits of the sampled target training users.
        test : ndarray of shape (n_test,), int
            Sorted positions of all visits of the held-out target users (same in every split).

        Raises
        ------
        ValueError
            See the class docstring.
        """
        self._check_params()
        _check_visits(X, "FewShotCitySplit")
        cities = _city_values(X)
        available = _available(cities)
        target = str(self.target_city)
        if target not in available:
            raise ValueError(
                f"target_city {self.target_city!r} is not in X; available cities: {available}."
            )
        if len(available) < 2:
            raise ValueError(
                f"FewShotCitySplit needs at least one source city besides {target!r}; X holds only "
                f"{available}."
            )
        is_target = cities == target
        source = np.flatnonzero(~is_target)
        target_pos = np.flatnonzero(is_target)
        groups_t = _user_codes(X[USER].iloc[target_pos])
        n_users = int(groups_t.max()) + 1
        n_test = max(1, _round_count(self.test_size, n_users))
        n_train_users = n_users - n_test
        if n_train_users < 1:
            raise ValueError(
                f"target city {target!r} has {n_users} user(s): too few to hold out "
                f"test_size={self.test_size} of them and fine-tune on the others (needs >= 2)."
            )
        rng = check_random_state(_seed(self.random_state))
        seed_test, seed_ft = (int(s) for s in rng.randint(np.iinfo(np.int32).max, size=2))
        gss = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed_test)
        train, test = next(gss.split(target_pos, groups=groups_t))
        test_rows = np.sort(target_pos[test])
        n_ft = min(n_train_users, max(1, _round_count(self.fraction, n_train_users)))
        if n_ft == n_train_users:
            for _ in range(self.n_splits):
                yield source, np.sort(target_pos[train]), test_rows
            return
        gss_ft = GroupShuffleSplit(
            n_splits=self.n_splits,
            train_size=n_ft,
            test_size=n_train_users - n_ft,
            random_state=seed_ft,
        )
        for ft, _ in gss_ft.split(train, groups=groups_t[train]):
            yield source, np.sort(target_pos[train[ft]]), test_rows

    def split(self, X, y=None, groups=None):
        """Generate ``(train, test)`` row positions, as scikit-learn splitters do.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame with ``user_id`` and ``city`` columns.
        y, groups : object
            Ignored.

        Yields
        ------
        train : ndarray of shape (n_train,), int
            Sorted positions of source-city visits plus the fine-tuning target users' visits.
        test : ndarray of shape (n_test,), int
            Sorted positions of the held-out target users' visits.

        Raises
        ------
        ValueError
            See the class docstring.
        """
        for source, finetune, test in self.split_three(X):
            yield np.sort(np.concatenate([source, finetune])), test


# --------------------------------------------------------------------------------------------------
# cross-city validation
# --------------------------------------------------------------------------------------------------
def cross_city_validate(
    estimator,
    X,
    target_cities=None,
    fraction=0.05,
    protocol="all",
    scoring=("acc@1", "mrr"),
    random_state=None,
    *,
    test_size=0.2,
    n_splits=1,
):
    """Pre-train on source cities, fine-tune on a few target users, score on held-out target users.

    For every target city and every split of :class:`FewShotCitySplit`::

        est = clone(estimator)
        est.fit(X.iloc[source])            # all other cities
        est.partial_fit(X.iloc[finetune])  # `fraction` of the target city's training users
        evaluate(est, X.iloc[test], protocol)

    Parameters
    ----------
    estimator : estimator
        Unfitted scikit-learn-style estimator with ``fit(X)``, ``partial_fit(X)`` and
        ``target_ranks(X, protocol=...)`` (e.g. ``TrajMoERegressor``); it is cloned, never fitted
        itself.
    X : DataFrame of shape (n_visits, n_columns)
        Visit frame of at least two cities (``user_id``, ``city``, a time and a location form).
        Not modified.
    target_cities : str or sequence of str, optional
        Cities to transfer to; default every city of ``X`` (sorted).
    fraction : float, default 0.05
        Fraction of the target's training users used for fine-tuning, in ``(0, 1]``.
    protocol : {"all", "last"}, default "all"
        Evaluation protocol (see :mod:`trajmoe.metrics`).
    scoring : str or sequence of str, default ("acc@1", "mrr")
        Metric names: ``"acc@k"``, ``"mrr"``, ``"ndcg@k"``.
    random_state : int, RandomState instance or None, default None
        Seed of the user splits (same int -> same test and fine-tuning users).
    test_size : float, default 0.2
        Fraction of each target city's users held out for testing, in ``(0, 1)``.
    n_splits : int, default 1
        Fine-tuning samples per target city (one result row each).

    Returns
    -------
    DataFrame of shape (n_target_cities * n_splits, 9 + n_metrics)
        One row per (target city, split), columns ``target_city`` (str), ``split`` (int),
        ``fraction`` (float), ``protocol`` (str), ``n_source_visits``, ``n_finetune_users``,
        ``n_finetune_visits``, ``n_test_users``, ``n_targets`` (int), then one float column per
        metric of ``scoring``, in the given order.

    Raises
    ------
    TypeError
        If ``X`` is not a DataFrame.
    ValueError
        If a target city is not in ``X`` (the message lists the available cities), ``X`` has fewer
        than 2 cities, ``fraction``/``test_size``/``n_splits``/``protocol`` are invalid, or a
        metric name is unknown.

    References
    ----------
    .. [1] ``docs/MODEL.md`` sections 4 (transfer: fine-tune ONE epoch on 1 %, 5 % or 10 % of the
       target city's users; report mean and spread over seeds) and 5; arXiv:2505.18670.
    """
    _check_visits(X, "cross_city_validate")
    protocol = _check_protocol(protocol)
    names = [scoring] if isinstance(scoring, str) else list(scoring)
    if not names:
        raise ValueError("scoring must name at least one metric, e.g. ('acc@1', 'mrr').")
    parsed = [_parse_metric_name(name) for name in names]
    keys = [m if k is None else f"{m}@{k}" for m, k in parsed]
    ks = sorted({k for _, k in parsed if k is not None}) or [1]

    cities = _city_values(X)
    available = _available(cities)
    if len(available) < 2:
        raise ValueError(
            f"cross_city_validate needs at least 2 cities in X[{CITY!r}], got {available}."
        )
    if target_cities is None:
        targets = available
    else:
        targets = [target_cities] if isinstance(target_cities, str) else list(target_cities)
        targets = [str(t) for t in targets]
        missing = [t for t in targets if t not in available]
        if missing:
            raise ValueError(
                f"target_cities {missing} not in X; available cities: {available}."
            )
    seed = _seed(random_state)

    rows = []
    for city in targets:
        splitter = FewShotCitySplit(
            city, fraction=fraction, test_size=test_size, n_splits=n_splits, random_state=seed
        )
        for i, (source, finetune, test) in enumerate(splitter.split_three(X)):
            est = clone(estimator)
            est.fit(X.iloc[source])
            est.partial_fit(X.iloc[finetune])
            X_test = X.iloc[test]
            report = evaluate(est, X_test, protocol=protocol, ks=ks)
            row = {
                "target_city": city,
                "split": i,
                "fraction": float(fraction),
                "protocol": protocol,
                "n_source_visits": len(source),
                "n_finetune_users": int(X[USER].iloc[finetune].nunique()),
                "n_finetune_visits": len(finetune),
                "n_test_users": int(X_test[USER].nunique()),
                "n_targets": report["n_targets"],
            }
            for name, key in zip(names, keys):
                row[name] = report[key]
            rows.append(row)
    return pd.DataFrame(rows)
