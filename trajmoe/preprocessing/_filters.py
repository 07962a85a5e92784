"""A pipeline step that leaves users with too few visits out of training, and says how many."""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import Interval, InvalidParameterError

from ..exceptions import DataWarning, SchemaError
from ..schema import CITY, DEFAULT_CITY, USER
from ._frames import FrameTransformer, check_cities_given, no_fit_params

__all__ = ["ShortUserFilter"]


class ShortUserFilter(FrameTransformer):
    """Drop the users with fewer than ``min_visits`` visits from the training data.

    Users with a handful of visits give no window of ``min_stays`` visits and little to learn
    from; this step, put before a model, leaves them out of fitting and reports how many
    users and visits it dropped (a DataWarning and ``counts_``). It filters in
    ``fit_transform``, which a Pipeline calls while fitting; ``transform``, which it calls
    while predicting and scoring, returns X unchanged, so that every visit still gets a
    prediction and every test user is scored.

    Parameters
    ----------
    min_visits : int, default 5
        Visits a user (a ``(city, user_id)`` pair) needs to be kept; the default is the
        estimators' default ``min_stays``.

    Attributes
    ----------
    counts_ : dict of str -> int
        Of the last ``fit`` or ``fit_transform``: ``n_users``, ``n_users_dropped``,
        ``n_visits``, ``n_visits_dropped``.

    Examples
    --------
    >>> import pandas as pd
    >>> from trajmoe.preprocessing import ShortUserFilter
    >>> X = pd.DataFrame({"user_id": [1, 1, 1, 2], "day": 0, "slot": [0, 1, 2, 3], "x": 0, "y": 0})
    >>> step = ShortUserFilter(min_visits=2)
    >>> len(step.fit_transform(X)), step.counts_["n_users_dropped"], len(step.transform(X))
    (3, 1, 4)
    """

    _parameter_constraints: dict = {"min_visits": [Interval(Integral, 1, None, closed="left")]}

    def __init__(self, min_visits=5):
        self.min_visits = min_visits

    def fit(self, X, y=None):
        """Count the users and visits :meth:`fit_transform` would drop.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame with a ``user_id`` column (``city`` optional).
        y : None
            Ignored.

        Returns
        -------
        self

        Raises
        ------
        trajmoe.exceptions.SchemaError
            If X is not a DataFrame with a ``user_id`` column.
        ValueError
            If every user of X has fewer than ``min_visits`` visits (nothing would be left).
        """
        self._kept(X)
        return self

    def fit_transform(self, X, y=None, **fit_params):
        """X without the visits of users with fewer than ``min_visits`` visits.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame. Not modified.
        y : None
            Ignored.
        **fit_params : dict
            None: a ValueError names any given.

        Returns
        -------
        DataFrame of shape (n_kept, n_columns)
            The kept rows of X, in X's order, with their index.

        Warns
        -----
        trajmoe.exceptions.DataWarning
            With the numbers of users and visits dropped, when any are.
        """
        no_fit_params(self, fit_params)
        kept = self._kept(X)
        if self.counts_["n_users_dropped"]:
            c = self.counts_
            warnings.warn(
                f"ShortUserFilter: {c['n_users_dropped']} of {c['n_users']} users have fewer than "
                f"min_visits={self.min_visits} visits; their {c['n_visits_dropped']} of {c['n_visits']} visits "
                "are left out of fitting (counts in counts_).", DataWarning,
                stacklevel=3)  # the caller of fit_transform (set_output wraps it)
        return X[kept]

    def transform(self, X):
        """X unchanged: prediction and scoring see every user (see the class notes).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)

        Returns
        -------
        DataFrame of shape (n_visits, n_columns)
            X itself.
        """
        return X

    def _kept(self, X):
        """Check the parameters and X, count, and return the bool mask of kept rows."""
        self._validate_params()
        if isinstance(self.min_visits, (bool, np.bool_)):     # sklearn's Interval(Integral) admits bools
            raise InvalidParameterError(f"The 'min_visits' parameter of ShortUserFilter must be an int >= 1, "
                                        f"got {self.min_visits!r} (a bool).")
        if not isinstance(X, pd.DataFrame) or USER not in X.columns:
            raise SchemaError(f"ShortUserFilter needs a visit frame (DataFrame) with a {USER!r} column, got "
                              f"{type(X).__name__}{'' if not isinstance(X, pd.DataFrame) else ' without it'}.")
        check_cities_given(X, "a user is counted within a city")
        city = X[CITY].astype(str).to_numpy() if CITY in X.columns else np.full(len(X), DEFAULT_CITY)
        user = pd.MultiIndex.from_arrays([city, X[USER].to_numpy()]).factorize()[0]
        visits = np.bincount(user, minlength=user.max() + 1 if len(user) else 0)
        kept = visits[user] >= self.min_visits
        if len(X) and not kept.any():  # raised before counts_ is set: a failed call changes nothing
            raise ValueError(
                f"ShortUserFilter(min_visits={self.min_visits}) would drop every one of the "
                f"{len(visits)} users of X (the most visits a user has is {int(visits.max())}), "
                f"leaving nothing to fit: lower min_visits")
        self.counts_ = {"n_users": int(len(visits)), "n_users_dropped": int((visits < self.min_visits).sum()),
                        "n_visits": int(len(X)), "n_visits_dropped": int((~kept).sum())}
        return kept
