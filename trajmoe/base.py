"""What every next-location estimator shares: preparing visits, evaluation windows,
predictions per visit row and full-ranking evaluation.

A subclass learns in ``fit``/``partial_fit`` (keeping a fitted :class:`SpatialSemanticEncoder`
in ``encoder_``) and implements :meth:`NextLocationEstimator._batch_scores`; this base class
turns those scores into ``predict``, ``predict_topk``, ``target_table``, ``target_ranks``
and ``score`` in exactly the same way for every model, so that models compared side by side
are scored on the same targets.
"""

from __future__ import annotations

import contextlib
import numbers
import zoneinfo
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils.validation import check_is_fitted

from . import metrics
from .encoder import SpatialSemanticEncoder, cell_labels, positional
from .schema import CITY, USER, validate_visits
from .sequences import PAD, make_windows, time_features, window_bounds

__all__ = ["NextLocationEstimator", "Prepared"]

_PROTOCOLS = ("all", "last")


@dataclass
class Prepared:
    """Visits of X ready for windowing (rows sorted by city, user, time).

    Attributes
    ----------
    order : ndarray of int64, shape (n,)
        Position in X of each sorted row.
    location, user_key, city_index : ndarray of int64, shape (n,)
        ``location`` is the city-local location id, -1 outside the city's vocabulary.
    times : DataFrame of shape (n, 4)
    cell : ndarray of int64, shape (n, 2), optional
        Grid cell ``(ix, iy)`` of each sorted row, also for out-of-vocabulary cells (the
        identity of a cell when its location id is -1).
    """

    order: np.ndarray
    location: np.ndarray
    user_key: np.ndarray
    city_index: np.ndarray
    times: pd.DataFrame
    cell: np.ndarray | None = None


class NextLocationEstimator(BaseEstimator):
    """Base class of next-location estimators over canonical visit frames.

    Subclasses define the parameters ``encoder``, ``window_days``, ``min_stays``,
    ``max_tokens`` and ``city_tz`` and the fitted attribute ``encoder_``.
    """

    _eval_batch_windows = 64

    def __sklearn_tags__(self):
        # rows are visits of a DataFrame, not samples of a 2-D array
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags

    # -------------------------------------------------------------- fitting helpers
    def _check_params(self):
        """Validate the window parameters and ``city_tz`` (called by every fit)."""
        for name in ("window_days", "max_tokens", "min_stays"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        self._check_city_tz()

    def _check_city_tz(self):
        tz = self.city_tz
        if tz is None:
            return
        names = {None: tz} if isinstance(tz, str) else tz
        if not isinstance(names, dict):
            raise ValueError(f"city_tz must be a dict of city -> IANA time zone name (or one name for every "
                             f"city), got {type(tz).__name__}.")
        for city, name in names.items():
            try:
                zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
                raise ValueError(f"city_tz[{city!r}] = {name!r} is not a known IANA time zone "
                                 "(e.g. 'America/New_York').") from None

    def _fit_encoder(self, X, pois, partial):
        self._check_params()
        if not partial or not hasattr(self, "encoder_"):
            self.encoder_ = clone(self.encoder) if self.encoder is not None else SpatialSemanticEncoder()
            self.encoder_.fit(X, pois=pois)
        else:
            self.encoder_.partial_fit(X, pois=pois)
        self.cities_ = list(self.encoder_.cities_)

    def _n_locations(self):
        return np.array([self.encoder_.cities_[c].n_locations for c in self.cities_], np.int64)

    def _prepare(self, X):
        visits = validate_visits(positional(X))
        located = self.encoder_.locate(visits)
        unknown = set(located[CITY]) - set(self.cities_)
        if unknown:
            raise ValueError(f"Cities {sorted(unknown)} are unknown to this model; register them with partial_fit.")
        tz = dict.fromkeys(self.cities_, self.city_tz) if isinstance(self.city_tz, str) else self.city_tz
        times = time_features(visits, tz)
        user_key = pd.MultiIndex.from_arrays([visits[CITY], visits[USER]]).factorize()[0].astype(np.int64)
        city_index = pd.Index(self.cities_).get_indexer(located[CITY]).astype(np.int64)
        return Prepared(order=visits.index.to_numpy(np.int64),
                        location=located["location_id"].to_numpy(np.int64),
                        user_key=user_key, city_index=city_index,
                        times=times.reset_index(drop=True),
                        cell=located[["ix", "iy"]].to_numpy(np.int64))

    def _held_out_users(self, prep):
        """User keys of a ``validation_fraction`` share of each city's users (cities with at
        least two users), drawn with ``random_state``: the users held out in fit."""
        held = [np.zeros(0, np.int64)]
        for c in np.unique(prep.city_index):
            users = np.unique(prep.user_key[prep.city_index == c])
            if len(users) < 2:
                continue
            split = GroupShuffleSplit(n_splits=1, test_size=self.validation_fraction, random_state=self.random_state)
            held.append(users[next(split.split(users, groups=users))[1]])
        return np.concatenate(held)

    def _windows(self, prep, stride_days=None, min_stays=1):
        bounds = window_bounds(prep.user_key, prep.times["day"].to_numpy(), self.window_days,
                               stride_days=stride_days, max_tokens=self.max_tokens, min_stays=min_stays)
        return make_windows(prep.location, prep.times, prep.city_index,
                            self._n_locations(), bounds)

    # ----------------------------------------------------------------- scoring core
    def _batch_scores(self, batch, city):
        """Scores of the city's cells for every valid token of a batch.

        Parameters
        ----------
        batch : dict of str -> ndarray of int64, shape (B, L)
            ``location``, ``slot``, ``dow``, ``gap`` of windows of ONE city.
        city : str

        Returns
        -------
        ndarray or Tensor of float, shape (n_valid, n_locations)
            One row per token with ``location != PAD``, in row-major (window, position)
            order; higher is more likely to be the next location.
        """
        raise NotImplementedError

    def _iter_batches(self, windows):
        """Yield (city index, window indices, width, batch, valid) per batch of one city."""
        for c in range(len(self.cities_)):
            idx = np.flatnonzero(windows.city == c)
            for start in range(0, len(idx), self._eval_batch_windows):
                b = idx[start:start + self._eval_batch_windows]
                width = int((windows.location[b] != PAD).sum(axis=1).max())
                batch = {k: getattr(windows, k)[b, :width] for k in ("location", "slot", "dow", "gap")}
                yield c, b, width, batch, batch["location"] != PAD

    def _iter_scores(self, windows):
        """Yield (city index, rows, target_rows, scores) per batch of one city's windows."""
        for c, b, width, batch, valid in self._iter_batches(windows):
            scores = self._batch_scores(batch, self.cities_[c])
            yield c, windows.row[b, :width][valid], windows.target_row[b, :width][valid], scores

    def _visit_windows(self, X):
        check_is_fitted(self, "encoder_")
        prep = self._prepare(X)
        return prep, self._windows(prep)

    @contextlib.contextmanager
    def _unseen_cells(self, X):
        """Score X with its cells outside the fitted regions as extra candidates.

        Swaps ``encoder_`` for :meth:`SpatialSemanticEncoder.with_unseen_cells` while the block
        runs (subclasses refresh what they derived from it in :meth:`_vocabulary_changed`) and
        puts the fitted one back afterwards, also on error: predicting never changes the model.
        """
        check_is_fitted(self, "encoder_")
        fitted = self.encoder_
        extended = fitted.with_unseen_cells(X)
        if extended is fitted:
            yield
            return
        self.encoder_ = extended
        try:
            self._vocabulary_changed()
            yield
        finally:
            self.encoder_ = fitted
            self._vocabulary_changed()

    def _vocabulary_changed(self):
        """Hook: ``encoder_`` now has other city tables (cells appended for prediction)."""

    def predict_topk(self, X, k=10):
        """The k most likely next locations after every visit.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame. The history of a visit is the visits of the same user
            before it in its evaluation window (``window_days`` long, non-overlapping).
        k : int, default 10

        Returns
        -------
        labels : ndarray of object (str), shape (n_visits, k)
            Cell labels ``"<city>:<ix>_<iy>"``, best first (see
            :meth:`SpatialSemanticEncoder.location_table` for centroids).
        scores : ndarray of float64, shape (n_visits, k)
            The model's scores of those cells (log-probabilities for neural models).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        ValueError
            If ``k`` is not an int >= 1. A city with fewer than k cells leaves the last
            columns as None labels with score -inf.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        with self._unseen_cells(X):
            return self._predict_topk(X, k)

    def _predict_topk(self, X, k):
        prep, windows = self._visit_windows(X)
        labels = np.empty((len(prep.order), k), dtype=object)
        values = np.full((len(prep.order), k), -np.inf)
        for c, rows, _, scores in self._iter_scores(windows):
            scores = scores if torch.is_tensor(scores) else torch.tensor(np.asarray(scores))
            kk = min(k, scores.shape[1])
            # stable sort: ties go to the lower location id (predict's rule; trajmoe.metrics ranks
            # ties pessimistically, so with ties Acc@1 can be below the accuracy of predict)
            top = torch.sort(scores, dim=1, descending=True, stable=True)
            ids = top.indices[:, :kk].numpy()
            vals = top.values[:, :kk].double().numpy()
            cells = self.encoder_.cities_[self.cities_[c]].cells
            pos = prep.order[rows]
            labels[pos, :kk] = cell_labels(self.cities_[c], cells[ids.ravel(), 0], cells[ids.ravel(), 1]).reshape(ids.shape)
            values[pos, :kk] = vals
        return labels, values

    def predict(self, X):
        """The most likely next location after every visit.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)

        Returns
        -------
        ndarray of object (str), shape (n_visits,)
            One cell label per row of X, in X's order; among cells tied for the best score,
            the one with the lowest location id.
        """
        return self.predict_topk(X, k=1)[0][:, 0]

    @staticmethod
    def _returning_rows(prep, windows):
        """True for every sorted row whose cell was already visited earlier in its window.

        Cells are compared by grid cell ``(ix, iy)`` (one user of one city per window), so an
        out-of-vocabulary cell (location id -1) is recognised too. Evaluation windows do not
        overlap, so every row has at most one window; a target row is a return exactly when its
        cell is one of the cells of the rows before it in the window, i.e. of the current visit
        and its history.
        """
        valid = windows.row >= 0
        rows = windows.row[valid]                      # row-major: window, then position
        window = np.nonzero(valid)[0]
        cell = prep.cell[rows]
        again = pd.DataFrame({"w": window, "ix": cell[:, 0], "iy": cell[:, 1]}).duplicated().to_numpy()
        out = np.zeros(len(prep.order), dtype=bool)
        out[rows] = again
        return out

    def target_table(self, X, protocol="all"):
        """Rank, kind (return or explore) and vocabulary status of every evaluated target.

        Targets are the next visits within evaluation windows (``window_days`` long,
        non-overlapping, at least ``min_stays`` visits). Protocol ``"all"`` scores every
        position (teacher forcing, as the reference code); ``"last"`` only the last target
        of every window. Ranks follow :func:`trajmoe.metrics.target_ranks`: full ranking over
        the city's cells, ties pessimistic (every cell tied with the true one counts as ranked
        before it). A true cell outside the city's vocabulary is a miss with rank
        :data:`trajmoe.metrics.OOV_RANK` (the largest int64, so that MRR and NDCG count it
        as 0).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame.
        protocol : {"all", "last"}, default "all"

        Returns
        -------
        DataFrame of shape (n_targets, 3)
            Index: labels of the rows of X that have a target (the visit whose next visit is
            ranked), in X's order. Columns:

            ``rank`` : int64
                1-based rank of the true next cell (1 = best), or ``OOV_RANK``.
            ``kind`` : object (str)
                ``"return"`` if the true next cell (compared by grid cell, also outside the
                vocabulary) was already visited earlier in the same evaluation window, at or
                before the current visit (the current cell included); else ``"explore"``.
            ``oov`` : bool
                True if the true next cell is not a candidate of the city's vocabulary (its
                rank is then ``OOV_RANK``).

        Raises
        ------
        ValueError
            If ``protocol`` is unknown.
        sklearn.exceptions.NotFittedError
            Before fit.

        See Also
        --------
        target_ranks : The ``rank`` column alone.
        trajmoe.metrics.evaluate : Every metric, overall and on returns and explorations.

        References
        ----------
        User guide, sections "Evaluation protocols" (full ranking; all-positions and
        last-position protocols) and "The copy path (option)" (about half of all next
        visits are a cell already visited in the window).
        """
        if protocol not in _PROTOCOLS:
            raise ValueError(f"protocol must be one of {_PROTOCOLS}, got {protocol!r}.")
        check_is_fitted(self, "encoder_")
        n_fitted = self._n_locations()
        with self._unseen_cells(X):
            return self._target_table(X, protocol, n_fitted)

    def _target_table(self, X, protocol, n_fitted):
        prep = self._prepare(X)
        windows = self._windows(prep, min_stays=self.min_stays)
        if protocol == "last":
            last = (windows.target_row >= 0).sum(axis=1) - 1
            keep = np.zeros_like(windows.target_row, dtype=bool)
            keep[np.arange(len(windows)), np.maximum(last, 0)] = last >= 0
            windows.target_row = np.where(keep, windows.target_row, -1)
        returning = self._returning_rows(prep, windows)
        positions, ranks = [], []
        for _, rows, targets, scores in self._iter_scores(windows):
            has = targets >= 0
            if not has.any():
                continue
            truth = prep.location[targets[has]]
            ranks.append(metrics.target_ranks(scores[torch.as_tensor(has)] if torch.is_tensor(scores) else scores[has], truth))
            positions.append(np.column_stack([prep.order[rows[has]], targets[has]]))
        positions = np.concatenate(positions) if positions else np.zeros((0, 2), np.int64)
        ranks = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
        order = np.argsort(positions[:, 0], kind="stable")
        target = positions[order, 1]
        kind = np.where(returning[target], "return", "explore").astype(object)
        truth = prep.location[target]
        oov = (truth < 0) | (truth >= n_fitted[prep.city_index[target]])
        return pd.DataFrame({"rank": ranks[order], "kind": kind, "oov": oov},
                            index=X.index[positions[order, 0]])

    def target_ranks(self, X, protocol="all"):
        """Full-ranking rank of the true next location of every evaluated visit.

        The ``rank`` column of :meth:`target_table`: targets are the next visits within
        evaluation windows (``window_days`` long, non-overlapping, at least ``min_stays``
        visits); protocol ``"all"`` scores every position (teacher forcing, as the reference
        code), ``"last"`` only the last target of every window. Ties are pessimistic (every
        cell tied with the true one counts as ranked before it), so with ties Acc@1 can be
        below the accuracy of :meth:`predict`. A true cell outside the city's vocabulary is a
        miss with rank :data:`trajmoe.metrics.OOV_RANK` (the largest int64, not N + 1), which
        MRR and NDCG count as 0.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
        protocol : {"all", "last"}, default "all"

        Returns
        -------
        Series of int64, named ``"rank"``
            Index: labels of the rows of X that have a target, in X's order; values: ranks
            (1 = best).

        Raises
        ------
        ValueError
            If ``protocol`` is unknown.

        References
        ----------
        User guide, section "Evaluation protocols" (full ranking; all-positions and
        last-position protocols).
        """
        return self.target_table(X, protocol=protocol)["rank"]

    def score(self, X, y=None):
        """Acc@1 of next-location prediction on X (protocol "all", full ranking).

        Ties are pessimistic (see :meth:`target_ranks`): a target tied with another cell for
        the best score is a miss, so with ties the score can be below the accuracy of
        :meth:`predict`.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
        y : None
            Ignored (targets derive from X).

        Returns
        -------
        float
        """
        return metrics.accuracy_at_k(self.target_ranks(X, protocol="all").to_numpy(), 1)
