"""Simple next-location baselines with the API of :class:`trajmoe.TrajMoERegressor`.

Users compare before they trust: every baseline is fitted on the same visits, uses the
same grid cells (its own :class:`SpatialSemanticEncoder`) and is scored by the same
evaluation windows and full ranking as the neural model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from .base import NextLocationEstimator
from .encoder import cell_keys, cells_of_keys
from .sequences import PAD

__all__ = ["PopularityBaseline", "MarkovBaseline", "HistoryFrequencyBaseline"]


class _CountingBaseline(NextLocationEstimator):
    """Shared parameters and fitting of the count-based baselines."""

    def __init__(self, encoder=None, window_days=3, min_stays=5, max_tokens=144, city_tz=None):
        self.encoder = encoder
        self.window_days = window_days
        self.min_stays = min_stays
        self.max_tokens = max_tokens
        self.city_tz = city_tz

    def fit(self, X, y=None, pois=None):
        """Count visits (and transitions) of every city in X.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame.
        y : None
            Ignored.
        pois : DataFrame, optional
            POI frame, passed to the encoder (it only widens the cell vocabulary here).

        Returns
        -------
        self
        """
        return self._learn(X, pois, partial=False)

    def partial_fit(self, X, y=None, pois=None):
        """Add the visits of X to the counts (new cities are registered).

        Returns
        -------
        self
        """
        return self._learn(X, pois, partial=True)

    def _learn(self, X, pois, partial):
        self._fit_encoder(X, pois, partial)
        return self

    def _popularity(self, city):
        counts = self.encoder_.cities_[city].visit_counts.astype(np.float64)
        return counts / max(counts.sum(), 1.0)


class PopularityBaseline(_CountingBaseline):
    """Global popularity: every next location is ranked by the cell's training visits.

    Parameters
    ----------
    encoder : SpatialSemanticEncoder or None, default None
        Template of the grid (cloned in fit); None = ``SpatialSemanticEncoder()``.
    window_days : int, default 3
        Length of the evaluation windows in days.
    min_stays : int, default 5
        Evaluation windows with fewer visits are not scored by :meth:`target_ranks`.
    max_tokens : int, default 144
        Longer windows are cut.
    city_tz : dict of str -> str, optional
        Time zone per city (see :func:`trajmoe.sequences.time_features`).

    Attributes
    ----------
    encoder_ : SpatialSemanticEncoder
        Fitted grid, vocabulary and visit counts of every city.
    cities_ : list of str

    References
    ----------
    MODEL.md section 6 (global popularity baseline).
    """

    def _batch_scores(self, batch, city):
        n = int((batch["location"] != PAD).sum())
        return np.tile(self._popularity(city), (n, 1))


class MarkovBaseline(_CountingBaseline):
    """First-order Markov chain over cells, shared by all users of a city.

    The next cell is ranked by the training count of transitions from the current cell
    (consecutive visits of one user within a window), backing off to global popularity
    for unseen transitions (score = transition count + popularity share, which is < 1).
    Parameters as :class:`PopularityBaseline`.

    Attributes
    ----------
    transitions_ : Series of int64
        Transition counts indexed by (city, from cell key, to cell key).

    References
    ----------
    MODEL.md sections 5-6 (first-order Markov baseline, Acc@1 .119 in the paper's table).
    """

    def _learn(self, X, pois, partial):
        self._fit_encoder(X, pois, partial)
        prep = self._prepare(X)
        windows = self._windows(prep)
        src = windows.row[:, :-1].ravel()
        dst = windows.row[:, 1:].ravel()
        ok = (src >= 0) & (dst >= 0)
        src, dst = src[ok], dst[ok]
        located = self.encoder_.locate(X).iloc[prep.order]
        key = cell_keys(located["ix"].to_numpy(), located["iy"].to_numpy())
        city = located["city"].to_numpy()
        counts = pd.Series(1, index=pd.MultiIndex.from_arrays([city[src], key[src], key[dst]])).groupby(level=[0, 1, 2]).sum()
        if partial and hasattr(self, "transitions_"):
            counts = counts.add(self.transitions_, fill_value=0).astype(np.int64)
        self.transitions_ = counts
        self._matrices = {}
        return self

    def _matrix(self, city):
        """Sparse transition counts of a city, shape (n_locations + 1, n_locations); the last
        row (out-of-vocabulary current cell) is empty. Sparse, as a dense matrix of a city
        of 20,000 cells would take 3.2 GB."""
        self._matrices = getattr(self, "_matrices", {})    # dropped when pickling
        if city not in self._matrices:
            table = self.encoder_.cities_[city]
            n = table.n_locations
            a = b = np.zeros(0, np.int64)
            values = np.zeros(0)
            if city in self.transitions_.index.get_level_values(0):
                sub = self.transitions_.xs(city, level=0)
                a = table.lookup(*cells_of_keys(sub.index.get_level_values(0).to_numpy()).T)
                b = table.lookup(*cells_of_keys(sub.index.get_level_values(1).to_numpy()).T)
                ok = (a >= 0) & (b >= 0)
                a, b, values = a[ok], b[ok], sub.to_numpy(np.float64)[ok]
            self._matrices[city] = sparse.csr_matrix((values, (a, b)), shape=(n + 1, n))
        return self._matrices[city]

    def _batch_scores(self, batch, city):
        loc = batch["location"][batch["location"] != PAD]
        return self._matrix(city)[loc].toarray() + self._popularity(city)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_matrices", None)
        return state


class HistoryFrequencyBaseline(_CountingBaseline):
    """History frequency: the cell the user visited most often so far in the window.

    Score of a cell = number of visits to it so far in the window (current visit
    included) + 0.5 x recency of its last visit (``1 / (1 + t - t_last)``, in (0, 1], the
    current cell scoring 1) + popularity share x ``0.25 / (L (L + 1))`` (L = window
    length, so that it stays below the smallest recency difference), so that ties go to
    the most recent cell, then to the most popular one; cells never visited in the
    window are ranked by popularity. On real
    check-in data this copy model is strong: it is the bar a neural model must clear.
    Parameters as :class:`PopularityBaseline`.

    References
    ----------
    MODEL.md section 6 (history frequency: Acc@1 .297 on Foursquare NYC, .213 on YJMob100K).
    """

    def _batch_scores(self, batch, city):
        loc = batch["location"]
        n_cells = self.encoder_.cities_[city].n_locations
        B, L = loc.shape
        valid = loc != PAD
        known = valid & (loc < n_cells)
        out = np.empty((int(valid.sum()), n_cells))
        # popularity only breaks ties of count and recency: recency terms of distinct last
        # visits differ by at least 0.5 / (L (L + 1)), so keep popularity below half that
        pop = self._popularity(city) * (0.25 / (max(L, 1) * (max(L, 1) + 1)))
        r = 0
        for b in range(B):
            counts = np.zeros(n_cells)
            last = np.full(n_cells, -1.0)
            for t in range(int(valid[b].sum())):
                if known[b, t]:
                    counts[loc[b, t]] += 1
                    last[loc[b, t]] = t
                recency = np.where(last >= 0, 1.0 / (1.0 + t - last), 0.0)
                out[r] = counts + 0.5 * recency + pop
                r += 1
        return out
