"""City-aware splitters and the cross-city (pre-train -> fine-tune -> score) validation helper.

Rows of a visit frame are visits, not samples: every split here keeps all visits of a user together
(a user's trajectory never leaks from training into evaluation), and cities are the unit of
transfer. The heavy lifting is done by scikit-learn's own splitters
(:class:`~sklearn.model_selection.GroupShuffleSplit`,
:class:`~sklearn.model_selection.LeaveOneGroupOut`, :class:`~sklearn.model_selection.GroupKFold`);
this module only chooses the groups.

scikit-learn's default ``cv`` (a :class:`~sklearn.model_selection.KFold` over rows) would put
visits of one user in the training and the test fold: pass ``cv=UserKFold()`` (k folds of users)
or ``cv=LeaveOneCityOut()`` instead. A trajmoe estimator scored on users it was fitted on says so
(:class:`trajmoe.exceptions.SharedUsersWarning`).

User identity is city-local: the pair ``(city, user_id)`` is one user, since the data sets of
different cities number their users independently.

References
----------
- Han, Yuan, Chen, Ding, Li. "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human
  Mobility Modeling", arXiv:2505.18670 (2025).
- ``docs/method.rst`` of this project, sections "Training protocol" (transfer: fine-tune one
  epoch on 1 %, 5 % or 10 % of the target city's users, sampled at random with a seed) and
  "Evaluation".
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import BaseCrossValidator, GroupKFold, GroupShuffleSplit, LeaveOneGroupOut
from sklearn.utils import check_random_state

from ._validation import check_protocol, parse_metric_name
from .metrics import evaluate
from .schema import CITY, DEFAULT_CITY, USER, format_rows, user_order

__all__ = [
    "train_test_users",
    "LeaveOneCityOut",
    "UserKFold",
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
    for column in (USER, CITY):
        _check_complete(X, column, caller)


def _check_complete(X: pd.DataFrame, column: str, caller: str) -> None:
    """ValueError naming the rows where ``column`` (if X has it) is missing."""
    if column not in X.columns:
        return
    missing = X[column].isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"{caller}: column {column!r} has {int(missing.sum())} missing value{'' if missing.sum() == 1 else 's'} "
            f"at rows {format_rows(X.index, missing)}: every visit needs a {'user' if column == USER else 'city'}. "
            "Fill or drop those rows."
        )


def _city_values(X: pd.DataFrame) -> np.ndarray:
    """City of every row as an object array of str (``DEFAULT_CITY`` when the column is absent)."""
    if CITY in X.columns:
        return X[CITY].astype(str).to_numpy(dtype=object)
    return np.full(len(X), DEFAULT_CITY, dtype=object)


def _user_codes(users: pd.Series) -> np.ndarray:
    """Integer code of each row's user, independent of row order and of the ids' type
    (:func:`trajmoe.schema.user_order`)."""
    codes = user_order(users)
    if (codes < 0).any():
        raise ValueError(
            f"{USER!r} has {int((codes < 0).sum())} missing values; every visit needs a user."
        )
    return codes


@contextlib.contextmanager
def _naming_the_step(where):
    """A ValueError raised in the block says where (``where``: the target city, the split and
    the step of :func:`cross_city_validate`), as the same exception class where it can."""
    try:
        yield
    except ValueError as exc:
        try:
            named = type(exc)(f"cross_city_validate, {where}: {exc}")
        except Exception:          # an exception class built otherwise: as it was
            raise exc from None
        raise named from exc


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
    .. [1] ``docs/method.rst``, "Evaluation" (users split 70/10/20 per city); arXiv:2505.18670.

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
    .. [1] ``docs/method.rst``, "Training protocol" and "Evaluation" (the target city is excluded
       from pre-training); arXiv:2505.18670.

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
            _check_complete(X, CITY, "LeaveOneCityOut")
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
# k folds of users
# --------------------------------------------------------------------------------------------------
class UserKFold(GroupKFold):
    """K folds of users: every visit of a user lies in one fold (the ``cv`` to use by default).

    A :class:`~sklearn.model_selection.GroupKFold` whose groups default to the users of ``X``
    (the pairs ``(city, user_id)``, as user ids are city-local), so it can be passed as ``cv=`` to
    :func:`~sklearn.model_selection.cross_val_score`, ``cross_validate`` or ``GridSearchCV`` with
    visit frames. scikit-learn's default ``cv`` splits rows and would score a model on users it was
    trained on; this one never does. Every city is in every fold (cities are split by users, not
    held out: for that, :class:`LeaveOneCityOut`).

    Parameters
    ----------
    n_splits : int, default 5
        Number of folds, at least 2 and at most the number of users.
    shuffle : bool, default False
        Shuffle the users before they are dealt into folds (else folds are balanced by visits,
        deterministically).
    random_state : int, RandomState instance or None, default None
        Seed of the shuffle (with ``shuffle=True``).

    Raises
    ------
    ValueError
        When splitting: if X has no ``user_id`` column and no groups are given, or fewer users
        than ``n_splits``.

    See Also
    --------
    LeaveOneCityOut : hold out whole cities.
    train_test_users : one train / validation / test split by users within each city.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 1], "city": ["a", "a", "a", "a", "a", "b"]})
    >>> [sorted(X.iloc[test][["city", "user_id"]].drop_duplicates().itertuples(index=False, name=None))
    ...  for _, test in UserKFold(n_splits=2).split(X)]
    [[('a', 2), ('b', 1)], [('a', 1), ('a', 3)]]

    User 1 of city a and user 1 of city b are two users.
    """

    @staticmethod
    def _user_groups(X, groups):
        if groups is not None:
            return groups
        if X is None:
            raise ValueError("UserKFold needs X (a visit frame with a 'user_id' column) or explicit groups.")
        _check_visits(X, "UserKFold")
        # users numbered in one order (city, then trajmoe.schema.user_order), not by their first
        # row: GroupKFold deals groups of equal size in the order of their numbers, so that
        # numbering by first row made the folds depend on the row order
        return pd.MultiIndex.from_arrays([_city_values(X), user_order(X[USER])]).factorize(sort=True)[0]

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of folds (``n_splits``).

        Parameters
        ----------
        X, y, groups : object
            Ignored.

        Returns
        -------
        int
        """
        return self.n_splits

    def split(self, X, y=None, groups=None):
        """Generate ``(train, test)`` row positions, one split per fold of users.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame with ``user_id`` (and ``city``) columns.
        y : object
            Ignored.
        groups : array-like of shape (n_visits,), optional
            User of each row; default the ``(city, user_id)`` pairs of X.

        Yields
        ------
        train : ndarray of shape (n_train,), int
            Positions of the visits of the other folds' users.
        test : ndarray of shape (n_test,), int
            Positions of the visits of this fold's users.

        Raises
        ------
        ValueError
            See the class docstring.
        """
        yield from super().split(X, y, self._user_groups(X, groups))


# --------------------------------------------------------------------------------------------------
# few-shot transfer split
# --------------------------------------------------------------------------------------------------
class FewShotCitySplit(BaseCrossValidator):
    """Few-shot transfer split: source cities + a random fraction of the target city's users.

    The target city's users are split once (per ``random_state``) into training users and held-out
    test users (``test_size``); then, for each of ``n_splits`` repetitions, ``fraction`` of the
    training users are drawn at random (by users) for fine-tuning. All rows of the other cities are
    the source (pre-training) data. :meth:`finetune_samples` draws the fine-tuning users alone, from
    training users split some other way (e.g. by :func:`train_test_users`).

    Parameters
    ----------
    target_city : str
        Name of the target city (compared with ``X["city"]`` as str).
    fraction : float, default 0.05
        Fraction of the target city's TRAINING users used for fine-tuning, in ``(0, 1]``
        (the paper's: 0.01, 0.05, 0.10). The count is ``round(fraction * n_train_users)`` (Python's
        ``round``: halves to even), at least 1. The test users do not depend on ``fraction``; the fine-tuning users of two fractions are
        separate draws (a smaller fraction's users are not necessarily among a larger one's).
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
    .. [1] ``docs/method.rst``, "Training protocol" (fine-tune on 1 %, 5 % or 10 % of the target city, sampled
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
        seed = _seed(self.random_state)
        seed_test = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
        gss = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed_test)
        train, test = next(gss.split(target_pos, groups=groups_t))
        train_rows, test_rows = np.sort(target_pos[train]), np.sort(target_pos[test])
        for finetune in self._draws(X[USER].iloc[train_rows], seed):
            yield source, train_rows[finetune], test_rows

    def finetune_samples(self, X, y=None, groups=None):
        """Generate the fine-tuning users of each split, drawn among the target-city users of X.

        The draw of :meth:`split_three`, among every ``target_city`` user of ``X``: for training
        users split some other way. With an int ``random_state``, the users are those of
        ``numpy.random.default_rng(random_state).choice`` over the users sorted by id (by their
        text where ids of several types mix), one draw after the other for several splits: the
        row order of ``X`` does not matter.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame with ``user_id`` and ``city`` columns (absent ``city``: one city named
            ``"city"``); e.g. the target's training users of :func:`train_test_users`. Not
            modified.
        y, groups : object
            Ignored.

        Yields
        ------
        finetune : ndarray of shape (n_finetune,), int
            Sorted positions of all visits of ``round(fraction * n_users)`` (at least one) of the
            target city's ``n_users`` users of ``X``, one sample per split.

        Raises
        ------
        TypeError
            If ``X`` is not a DataFrame.
        ValueError
            If ``X`` is empty, lacks ``user_id`` or has no row of ``target_city``.

        Examples
        --------
        >>> import pandas as pd
        >>> X = pd.DataFrame({"user_id": [u for u in range(20) for _ in range(2)], "city": "t"})
        >>> rows = next(FewShotCitySplit("t", fraction=0.1, random_state=0).finetune_samples(X))
        >>> X["user_id"].iloc[rows].nunique(), len(rows)
        (2, 4)
        """
        self._check_params()
        _check_visits(X, "FewShotCitySplit")
        cities = _city_values(X)
        if str(self.target_city) not in set(cities):
            raise ValueError(
                f"target_city {self.target_city!r} is not in X; available cities: {_available(cities)}."
            )
        pos = np.flatnonzero(cities == str(self.target_city))
        for finetune in self._draws(X[USER].iloc[pos], _seed(self.random_state)):
            yield pos[finetune]

    def _draws(self, users, seed):
        """Positions in ``users`` (the visits' user ids) of the visits of each split's sample."""
        # codes in the order of the sorted user ids (every visit has a user): the draw does not
        # depend on the row order
        codes = _user_codes(users)
        candidates = np.unique(codes)
        size = min(len(candidates), max(1, round(self.fraction * len(candidates))))
        rng = np.random.default_rng(seed)
        for _ in range(self.n_splits):
            yield np.flatnonzero(np.isin(codes, rng.choice(candidates, size=size, replace=False)))

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
    pois=None,
):
    """Pre-train on source cities, fine-tune on a few target users, score on held-out target users.

    For every target city and every split of :class:`FewShotCitySplit`::

        est = clone(estimator)
        est.fit(X.iloc[source], pois=<the other cities' POIs>)              # all other cities
        est.partial_fit(X.iloc[finetune], pois=<the target city's POIs>)   # `fraction` of its training users
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
        Seed of the user splits (same int -> same test and fine-tuning users, whatever the row
        order).
    test_size : float, default 0.2
        Fraction of each target city's users held out for testing, in ``(0, 1)``.
    n_splits : int, default 1
        Fine-tuning samples per target city (one result row each).
    pois : DataFrame, optional
        POI frame of the cities (:func:`trajmoe.schema.validate_pois`, with a ``city`` column
        naming them): the sources' POIs go to ``fit``, the target's to ``partial_fit``. None:
        the estimator's POIs come from ``X`` alone (check-in cities' venue categories).

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
        If ``X`` or ``pois`` is not a DataFrame, or ``target_cities`` or ``scoring`` is neither
        a name nor a sequence of names.
    ValueError
        If a target city is not in ``X`` (the message lists the available cities) or has too
        few users to split (checked for every target before the first fit),
        ``target_cities`` is empty or names a city twice, ``X`` has fewer than 2 cities,
        ``fraction``/``test_size``/``n_splits``/``protocol`` are invalid, a metric name is
        unknown, repeated or a "_last" scorer name (use ``protocol``), or ``pois`` has no ``city`` column.

    References
    ----------
    .. [1] ``docs/method.rst``, "Training protocol" (transfer: fine-tune ONE epoch on 1 %, 5 % or 10 % of the
       target city's users; report mean and spread over seeds); Han et al., arXiv:2505.18670 (the
       few-shot transfer experiments).
    """
    _check_visits(X, "cross_city_validate")
    protocol = check_protocol(protocol)
    if not isinstance(scoring, str) and not np.iterable(scoring):
        raise TypeError(f"scoring must be a metric name or a list of them (e.g. ('acc@1', 'mrr')), got {scoring!r}.")
    names = [scoring] if isinstance(scoring, str) else list(scoring)
    if not names:
        raise ValueError("scoring must name at least one metric, e.g. ('acc@1', 'mrr').")
    last = [name for name in names if isinstance(name, str) and name.strip().lower().endswith("_last")]
    if last:
        raise ValueError(f"scoring {last}: cross_city_validate scores one protocol, set by protocol='last' "
                         "(or 'all'); name the metrics without '_last'.")
    parsed = [parse_metric_name(name) for name in names]
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
        if not isinstance(target_cities, str) and not np.iterable(target_cities):
            raise TypeError(f"target_cities must be a city name or a list of them, got {target_cities!r}.")
        targets = [target_cities] if isinstance(target_cities, str) else list(target_cities)
        targets = [str(t) for t in targets]
        if not targets:
            raise ValueError(f"target_cities is empty: name at least one of {available}, or None for all.")
        missing = [t for t in targets if t not in available]
        if missing:
            raise ValueError(
                f"target_cities {missing} not in X; available cities: {available}."
            )
        repeated = sorted({t for t in targets if targets.count(t) > 1})
        if repeated:
            raise ValueError(f"target_cities names {repeated} more than once: name each target city once.")
    if len(set(keys)) < len(keys):
        raise ValueError(f"scoring names a metric more than once: {names} (names are case-insensitive).")
    seed = _seed(random_state)
    if pois is not None and not isinstance(pois, pd.DataFrame):
        raise TypeError(f"pois must be a POI frame (DataFrame) with a {CITY!r} column, got {type(pois).__name__}.")
    if pois is not None and CITY not in pois.columns:
        raise ValueError(f"pois has no {CITY!r} column: cross_city_validate gives each city's POIs to the step "
                         "that learns it (the sources' to fit, the target's to partial_fit), so they must name "
                         "their city.")
    poi_city = None if pois is None else pois[CITY].astype(str).to_numpy()

    def pois_of(target, source):
        """``pois=`` of the call for the sources or the target (none without a POI frame)."""
        if pois is None:
            return {}
        mask = (poi_city != target) if source else (poi_city == target)
        return {"pois": pois[mask] if mask.any() else None}

    # every target's splits drawn before the first fit: a target too small to split is an
    # error before hours of work on the others, not after
    plans = [(city, list(FewShotCitySplit(city, fraction=fraction, test_size=test_size, n_splits=n_splits,
                                           random_state=seed).split_three(X)))
             for city in targets]
    rows = []
    for city, splits in plans:
        for i, (source, finetune, test) in enumerate(splits):
            est = clone(estimator)
            where = f"target city {city!r}, split {i}"
            with _naming_the_step(f"{where}, pre-training on the other cities"):
                est.fit(X.iloc[source], **pois_of(city, source=True))
            with _naming_the_step(f"{where}, fine-tuning on {X[USER].iloc[finetune].nunique()} of its users"):
                est.partial_fit(X.iloc[finetune], **pois_of(city, source=False))
            X_test = X.iloc[test]
            with _naming_the_step(f"{where}, scoring its {X_test[USER].nunique()} test users"):
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
