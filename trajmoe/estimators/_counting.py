"""Simple next-location baselines with the API of :class:`trajmoe.TrajMoERegressor`.

Users compare before they trust: every baseline is fitted on the same visits, uses the
same grid cells (its own :class:`SpatialSemanticEncoder`) and is scored by the same
evaluation windows and full ranking as the neural model.
"""

from __future__ import annotations

import numbers
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy import optimize, signal, sparse, special
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from .._constants import PAD
from ..encoder import cell_keys, cells_of_keys
from ..exceptions import DataWarning
from ._base import NextLocationEstimator
from ._scoring import rank_sparse

__all__ = ["PopularityBaseline", "MarkovBaseline", "HistoryFrequencyBaseline", "GravityBaseline",
           "HistoryGravityBaseline"]

#: Score entries (rows x cells) computed at once by the gravity baselines (32 MB of float64).
_CHUNK_ENTRIES = 1 << 22
#: Largest (current cells x cells) log-distance matrix kept across the likelihood evaluations of
#: one offset during the parameter search (128 MB of float64); larger ones are recomputed.
_CACHE_ENTRIES = 1 << 24
#: Largest bounding box (in cells) of a city whose gravity normalisers the parameter search
#: computes as one FFT convolution of the popularity grid with the distance kernel.
_FFT_CELLS = 1 << 20
#: Largest table of grid offsets (entries) of :func:`_decay_table` (64 MB of float64, twice).
_DECAY_ENTRIES = 1 << 23
#: Score entries (rows x cells) of the gravity rows computed at once from the decay table
#: (the index block: 2 MB of int64, so that it stays in cache).
_ROW_BLOCK = 1 << 18
#: Held-out targets (at most) on which ``selection="accuracy"`` compares the offsets.
_SELECTION_TARGETS = 3000
#: Search bounds of the fitted weights of the gravity baselines.
_BOUNDS = {"beta": (0.0, 10.0), "count_weight": (0.0, 20.0), "recency_weight": (0.0, 50.0),
           "history_weight": (1e-6, 1.0 - 1e-6), "popularity_weight": (0.0, 1.0 - 1e-6)}
_START = {"beta": 1.0, "count_weight": 0.5, "recency_weight": 0.5, "history_weight": 0.5,
          "popularity_weight": 0.2}
_SELECTION = ("accuracy", "likelihood")
_FITTED = ("beta", "offset", "history_weight", "popularity_weight", "count_weight", "recency_weight")


class _CountingBaseline(NextLocationEstimator):
    """Shared parameters and fitting of the count-based baselines.

    Scored on a city they were not fitted on (zero-shot, see :class:`NextLocationEstimator`),
    the counting baselines do what they can without that city's training data: its cells have
    no visit counts, so popularity ranks every cell alike (uniform: every target ties with
    every cell), the Markov chain falls back to the window's history (history frequency's
    scores), history frequency works as everywhere, and the gravity baselines use their
    city-invariant fitted decay with uniform popularity.
    """

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

    def _is_zero_shot(self, city):
        """Whether ``city`` is scored zero-shot (not fitted: no training visit)."""
        return getattr(self.encoder_.cities_[city], "zero_shot_bin", None) is not None

    def _popularity(self, city):
        counts = self.encoder_.cities_[city].visit_counts.astype(np.float64)
        return counts / max(counts.sum(), 1.0)

    def _sparse_scores(self, batch, city):
        """The scores of :meth:`_batch_scores` as base rows with a few cells changed per token.

        Returns
        -------
        tuple or None
            ``(base, row_of, token, cell, value, sorted_base)`` as the arguments of
            :func:`~trajmoe.estimators._scoring.rank_sparse` (``sorted_base`` None when not
            known); None where the scores are dense (then :meth:`_batch_scores` is ranked).
        """
        return None

    def _batch_rank(self, batch, city, k, truth, values=True):
        scores = self._sparse_scores(batch, city)
        if scores is None:
            return super()._batch_rank(batch, city, k, truth, values)
        base, row_of, token, cell, value, sorted_base = scores
        return rank_sparse(base, row_of, token, cell, value, k, truth, sorted_base=sorted_base)

    def _fixed_base(self, key, compute):
        """One base row ``compute()`` [1, N] and its sorted values, once per call (:meth:`_memo`)."""
        return self._memo(key, lambda: (lambda base: (base, np.sort(base[0])))(compute()))

    def _popularity_entries(self, batch, city, cells=None):
        """Sparse scores of a batch whose base is popularity: ``cells`` (csr rows per token)
        score ``count + popularity`` (Markov), none when None (popularity alone)."""
        n = int((batch["location"] != PAD).sum())
        base, sorted_base = self._fixed_base(("popularity", city), lambda: self._popularity(city)[None, :])
        if cells is None:
            token = cell = np.zeros(0, np.int64)
            return base, np.zeros(n, np.int64), token, cell, np.zeros(0), sorted_base
        token = np.repeat(np.arange(n), np.diff(cells.indptr))
        cell = cells.indices.astype(np.int64)
        return base, np.zeros(n, np.int64), token, cell, cells.data + base[0, cell], sorted_base

    def _history_entries(self, batch, city, moves_weight=0):
        """Sparse scores of history frequency (see :func:`_history_frequency_scores`)."""
        loc = batch["location"]
        n = int((loc != PAD).sum())
        scale = _popularity_scale(loc, self.max_tokens)
        base, sorted_base = self._fixed_base(("history", city, scale),
                                             lambda: (self._popularity(city) * scale)[None, :])
        token, cell, *terms = _history(loc, base.shape[1], moves=bool(moves_weight))
        return base, np.zeros(n, np.int64), token, cell, base[0, cell] + _frequency(terms, moves_weight), sorted_base


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
        Longer windows are cut (into pieces of ``max_tokens`` stays).
    city_tz : dict of str -> str, optional
        Time zone per city (see :func:`trajmoe.sequences.time_features`). A city without one
        has its tz-aware times read in the zone of the frame that first fitted it
        (``time_zones_``): the same instants give the same local times whatever zone a later
        frame carries them in.

    Attributes
    ----------
    encoder_ : SpatialSemanticEncoder
        Fitted grid, vocabulary and visit counts of every city.
    cities_ : list of str
    time_zones_, time_forms_ : dict of str -> str
        The zone and the form (``"started_at"`` or ``"day/slot"``) each city's times first came
        in, as in :class:`~trajmoe.TrajMoERegressor`.

    References
    ----------
    docs/method.rst, "What the public data shows" (global popularity baseline).
    """

    def _batch_scores(self, batch, city):
        n = int((batch["location"] != PAD).sum())
        return np.tile(self._popularity(city), (n, 1))

    def _sparse_scores(self, batch, city):
        return self._popularity_entries(batch, city)


class MarkovBaseline(_CountingBaseline):
    """First-order Markov chain over cells, shared by all users of a city.

    The next cell is ranked by the training count of transitions from the current cell
    (consecutive visits of one user within a window), backing off to global popularity
    for unseen transitions (score = transition count + popularity share, which is < 1).
    A city scored zero-shot (not fitted; no transition known) is scored by the window's
    history, as :class:`HistoryFrequencyBaseline` scores it.

    Parameters
    ----------
    encoder, window_days, min_stays, max_tokens, city_tz
        As in :class:`PopularityBaseline`.

    Attributes
    ----------
    transitions_ : Series of int64
        Transition counts indexed by (city, from cell key, to cell key).
    encoder_, cities_, time_zones_, time_forms_
        As in :class:`PopularityBaseline`.

    References
    ----------
    docs/method.rst, "Evaluation" and "What the public data shows" (first-order Markov baseline,
    Acc@1 .119 in the paper's table).
    """

    _caches = ("_matrices",)            # a city's sparse transition matrix, built on first use

    def _learn(self, X, pois, partial):
        X = self._fit_encoder(X, pois, partial)
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
        return self

    def _vocabulary_changed(self):
        self._matrices = {}

    def _matrix(self, city):
        """Sparse transition counts of a city, shape (n_locations + 1, n_locations); the last
        row (out-of-vocabulary current cell) is empty. Sparse, as a dense matrix of a city
        of 20,000 cells would take 3.2 GB."""
        self._matrices = getattr(self, "_matrices", {})    # a cache (_caches): not pickled
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
        if self._is_zero_shot(city):        # no transition known: the window's history
            return _history_frequency_scores(batch["location"], self._popularity(city), self.max_tokens)
        loc = batch["location"][batch["location"] != PAD]
        return self._matrix(city)[loc].toarray() + self._popularity(city)

    def _sparse_scores(self, batch, city):
        if self._is_zero_shot(city):
            return self._history_entries(batch, city)
        return self._popularity_entries(batch, city, self._matrix(city)[batch["location"][batch["location"] != PAD]])


def _history(location, n_cells, moves=False):
    """Cells visited so far in the window, for every valid token of a batch.

    Parameters
    ----------
    location : ndarray of int64, shape (B, L)
        Location ids of a batch of one city's windows (``PAD`` after the end of a window,
        ``n_cells`` for out-of-vocabulary cells, which are not counted).
    n_cells : int
        Number of the city's cells.

    Returns
    -------
    token, cell : ndarray of int64, shape (n_entries,)
        Row of the token among the valid tokens (row-major: window, then position) and a
        cell visited at or before it in its window (the current visit included).
    count : ndarray of float64, shape (n_entries,)
        Visits to that cell so far in the window.
    recency : ndarray of float64, shape (n_entries,)
        ``1 / (1 + t - t_last)`` in (0, 1] (t: position of the token, t_last: position of
        the cell's last visit so far; the current cell scores 1).
    moves : ndarray of float64, shape (n_entries,)
        Only with ``moves``: earlier moves of the window from the token's cell to that cell
        (visits at ``s`` whose previous visit ``s - 1`` was in the token's cell).
    """
    n_windows, width = location.shape
    valid = location != PAD
    known = valid & (location < n_cells)
    token_of = np.cumsum(valid.ravel()) - 1
    position = np.nonzero(valid)[1]
    t_pair, s_pair = np.tril_indices(width)        # every (t, s) with s <= t
    window, pair = np.nonzero(valid[:, t_pair] & known[:, s_pair])
    t, s = t_pair[pair], s_pair[pair]
    token = token_of[window * width + t]
    if not len(token):
        empty = np.zeros(0, np.int64)
        return (empty, empty, np.zeros(0), np.zeros(0)) + ((np.zeros(0),) if moves else ())
    # sort by (token, cell, s): the group of a (token, cell) ends with its last visit
    key = (token * n_cells + location[window, s]) * width + s
    if moves:
        # the visit at s arrived from the token's cell (the visit at s - 1 < t was there)
        arrived = (s > 0) & known[window, s - 1] & (location[window, s - 1] == location[window, t])
        order = np.argsort(key)
        key, arrived = key[order], arrived[order].astype(np.float64)
    else:
        key = np.sort(key)
    entry = key // width
    first = np.r_[True, entry[1:] != entry[:-1]]
    last = np.r_[entry[1:] != entry[:-1], True]
    starts = np.flatnonzero(first)
    count = np.diff(np.r_[starts, len(entry)]).astype(np.float64)
    entry, s_last = entry[last], key[last] % width
    token, cell = entry // n_cells, entry % n_cells
    recency = 1.0 / (1.0 + position[token] - s_last)
    if moves:
        return token, cell, count, recency, np.add.reduceat(arrived, starts)
    return token, cell, count, recency


#: ``moves_weight`` of the rule "history frequency + moves" that the demo and the benchmarks run
#: beside the plain rule: on the validation users of the three benchmark targets (seeds 0-2)
#: weights 1 / 2 / 4 / 100 gained .011 / .013 / .015 / .017 Acc@1 over history frequency on average
#: (NYC .035-.057 at 100); 100 ranks the window's moves first, then the visits.
MOVES_RULE_WEIGHT = 100
#: ``moves_weight`` of :class:`HistoryGravityBaseline` in the rule "history + gravity + moves" that
#: the demo and the benchmarks run beside it: on the same validation users, weights 0.5 / 1 / 2 / 4 /
#: 100 gained .005 / .008 / .011 / .016 / .015 Acc@1 (MRR .003 / .005 / .007 / .011 / .007) over
#: the rule without moves, mean of the three targets (NYC +.030 at 4, Gowalla Bay Area +.011,
#: YJMob A +.007; ``docs/results.rst``).
MOVES_GRAVITY_WEIGHT = 4


class HistoryFrequencyBaseline(_CountingBaseline):
    """History frequency: the cell the user visited most often so far in the window.

    Score of a cell = number of visits to it so far in the window (current visit
    included) + 0.5 x recency of its last visit (``1 / (1 + t - t_last)``, in (0, 1], the
    current cell scoring 1) + popularity share x ``0.25 / (max_tokens (max_tokens + 1))``
    (it stays below half the smallest difference of two recency terms in any window, so it
    only breaks ties; a constant of the estimator, so a visit gets the same scores
    whatever windows share its batch), so that ties go to the most recent cell, then to
    the most popular one; cells never visited in the window are ranked by popularity. On
    real check-in data this copy model is strong: it is the bar a neural model must clear.

    With ``moves_weight = w > 0`` the score adds ``w`` x the user's own moves in the window
    from the current cell to the cell (at ``A`` again after ``A -> B``, ``B`` counts one): a
    first-order chain of the window itself. An integer weight keeps the tie rule above.

    Parameters
    ----------
    moves_weight : int >= 0, default 0
        Weight of the window's moves from the current cell (0: the rule above, the
        literature's).
    encoder, window_days, min_stays, max_tokens, city_tz
        As in :class:`PopularityBaseline`.

    Attributes
    ----------
    encoder_, cities_, time_zones_, time_forms_
        As in :class:`PopularityBaseline`.

    References
    ----------
    docs/method.rst, "What the public data shows" (history frequency: Acc@1 .297 on Foursquare NYC, .213 on YJMob100K).
    """

    _parameter_constraints: dict = {
        **_CountingBaseline._parameter_constraints,
        "moves_weight": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, encoder=None, window_days=3, min_stays=5, max_tokens=144, city_tz=None, moves_weight=0):
        super().__init__(encoder=encoder, window_days=window_days, min_stays=min_stays, max_tokens=max_tokens,
                         city_tz=city_tz)
        self.moves_weight = moves_weight

    def _batch_scores(self, batch, city):
        return _history_frequency_scores(batch["location"], self._popularity(city), self.max_tokens,
                                         self.moves_weight)

    def _sparse_scores(self, batch, city):
        return self._history_entries(batch, city, self.moves_weight)


def _popularity_scale(loc, max_tokens):
    """Factor of the popularity share in history frequency's scores: ``0.25 / (m (m + 1))``.

    Recency terms of distinct last visits differ by at least ``0.5 / (L (L + 1))`` in a window of
    ``L <= m`` tokens (``m``: ``max_tokens``, or the batch's width if longer): popularity (a share
    <= 1) stays below half that, so it only breaks ties.
    """
    m = max(int(max_tokens), loc.shape[1], 1)
    return 0.25 / (m * (m + 1))


def _history_frequency_scores(loc, popularity, max_tokens, moves_weight=0):
    """History frequency's scores of a batch: visits so far in the window + 0.5 x recency
    (+ ``moves_weight`` x moves from the current cell), ties broken by popularity (see
    :class:`HistoryFrequencyBaseline`).

    Parameters
    ----------
    loc : ndarray of int64, shape (B, L)
        Location ids of a batch of one city's windows.
    popularity : ndarray of float64, shape (n_cells,)
        Visit shares of the city's cells.
    max_tokens : int
    moves_weight : int, default 0

    Returns
    -------
    ndarray of float64, shape (n_valid, n_cells)
    """
    n_valid = int((loc != PAD).sum())
    out = np.tile(popularity * _popularity_scale(loc, max_tokens), (n_valid, 1))
    token, cell, *terms = _history(loc, len(popularity), moves=bool(moves_weight))
    out[token, cell] += _frequency(terms, moves_weight)
    return out


def _frequency(terms, moves_weight):
    """``count + 0.5 recency (+ moves_weight moves)`` of :func:`_history`'s entries."""
    count, recency, *moves = terms
    score = count + 0.5 * recency
    return score + moves_weight * moves[0] if moves else score


# ----------------------------------------------------------------------------------------------
# gravity baselines
# ----------------------------------------------------------------------------------------------
def _log_popularity(visit_counts):
    """Laplace-smoothed log visit share of every cell: ``log((n_c + 1) / (N + n_cells))``."""
    counts = np.asarray(visit_counts, np.float64)
    return np.log((counts + 1.0) / (counts.sum() + len(counts)))


def _log_distance(query, xy, offset, out=None, work=None):
    """``log(d + offset)`` of shape (n_query, n_cells), d in metres between centroids (into
    ``out``, with ``work`` as scratch, when given: arrays of that shape)."""
    out = np.subtract(query[:, :1], xy[:, 0], out=out)
    work = np.subtract(query[:, 1:], xy[:, 1], out=work)
    np.hypot(out, work, out=out)
    out += offset
    return np.log(out, out=out)


def _log_softmax_rows(scores):
    """Rows of ``scores`` minus their log-sum-exp, in place, chunk by chunk."""
    step = max(1, _CHUNK_ENTRIES // max(scores.shape[1], 1))
    for start in range(0, len(scores), step):
        block = scores[start:start + step]
        block -= special.logsumexp(block, axis=1, keepdims=True)
    return scores


def _gravity(log_pop, xy, query, beta, offset, log_norm=None):
    """Gravity log-probabilities of shape (n_query, n_cells): the log-softmax over the cells of
    ``log_pop - beta * log(d + offset)`` (``log_norm``: the log-normalisers of the rows, when
    known); rows of queries without coordinates (NaN) get the log-softmax of ``log_pop``."""
    out = np.empty((len(query), len(log_pop)))
    out[:] = log_pop
    located = np.flatnonzero(~np.isnan(query[:, 0]))
    if beta != 0:
        step = max(1, _CHUNK_ENTRIES // max(len(log_pop), 1))
        buffers = np.empty((2, min(step, len(located)), len(log_pop)))     # reused: no page faults
        for start in range(0, len(located), step):
            rows = located[start:start + step]
            ld = _log_distance(query[rows], xy, offset, out=buffers[0, :len(rows)], work=buffers[1, :len(rows)])
            ld *= beta
            if rows[-1] - rows[0] + 1 == len(rows):                        # a slice: in place
                np.subtract(out[rows[0]:rows[-1] + 1], ld, out=out[rows[0]:rows[-1] + 1])
            else:
                out[rows] -= ld
    if log_norm is not None:
        out -= log_norm[:, None]
        return out
    return _log_softmax_rows(out)


def _decay_table(cells, cell_size, beta, offset):
    """Distance decay of every grid offset between two cells of a city's bounding box.

    The distance between the centroids of cells (ix, iy) and (jx, jy) of a grid is
    ``hypot(cell_size (ix - jx), cell_size (iy - jy))`` metres: it depends only on the offset
    (dx, dy). Its decay is computed here once per offset of the bounding box of the city's
    cells, with the floating-point operations of :func:`_log_distance` (so the same float64
    as the centroid differences wherever the centroids are exact, as with cell sizes of whole
    metres; else within an ulp, and cells at equal grid offsets tie exactly), and a row of
    :func:`_gravity` becomes a gather from this table instead of a ``hypot`` and a ``log`` per
    cell.

    Parameters
    ----------
    cells : ndarray of int64, shape (n_cells, 2)
        Grid cells (ix, iy) of the city's vocabulary.
    cell_size : float
        Side of a cell in metres.
    beta, offset : float
        Decay exponent and offset (metres) of the gravity law.

    Returns
    -------
    dict or None
        None when the table would exceed :data:`_DECAY_ENTRIES` entries; else ``low`` (ndarray
        of int64 (2,): the lowest (ix, iy) of the box), ``shape`` ((w, h), cells), ``flat``
        (ndarray of int64 (n_cells,): the table index of every cell seen from the box's
        ``low`` corner), ``decay`` (ndarray of float64 ((2w - 1)(2h - 1),): ``beta log(d +
        offset)``), ``kernel`` (float64, same shape: ``exp(floor - decay)``, in (0, 1] for
        beta >= 0) and ``floor`` (float: the decay at distance 0).
    """
    if not len(cells):
        return None
    low = cells.min(axis=0)
    w, h = (int(v) for v in cells.max(axis=0) - low + 1)
    if (2 * w - 1) * (2 * h - 1) > _DECAY_ENTRIES:
        return None
    dx = np.arange(1 - w, w, dtype=np.int64) * float(cell_size)
    dy = np.arange(1 - h, h, dtype=np.int64) * float(cell_size)
    decay = np.hypot(dx[:, None], dy[None, :]).ravel()
    decay += offset
    np.log(decay, out=decay)
    decay *= beta
    floor = float(decay[(w - 1) * (2 * h - 1) + h - 1])
    rel = cells - low
    return {"low": low, "shape": (w, h), "flat": rel[:, 0] * (2 * h - 1) + rel[:, 1], "decay": decay,
            "kernel": np.exp(floor - decay), "floor": floor}


def _gravity_from_table(log_pop, table, query_cells, out):
    """Gravity log-probabilities of queries inside the bounding box of :func:`_decay_table`.

    The same law as :func:`_gravity`: row ``i`` is ``log_pop - decay(i, c) - log Z(i)``, with
    ``Z(i) = sum_c exp(log_pop_c) exp(floor - decay(i, c)) exp(-floor)`` computed as a float64
    sum per row (no ``exp`` per cell; within a few ulps of the log-sum-exp; a row's floats do
    not depend on the rows computed with it).

    Parameters
    ----------
    log_pop : ndarray of float64, shape (n_cells,)
    table : dict
        Of :func:`_decay_table`.
    query_cells : ndarray of int64, shape (n_query, 2)
        Current cells, inside the box.
    out : ndarray of float64, shape (n_query, n_cells)
        Filled with the rows.

    Returns
    -------
    ndarray of bool, shape (n_query,)
        Rows whose normaliser underflowed (a huge ``beta``): their ``out`` is not set.
    """
    w, h = table["shape"]
    rel = query_cells - table["low"]
    shift = (w - 1 - rel[:, 0]) * (2 * h - 1) + (h - 1 - rel[:, 1])
    pop = np.exp(log_pop)
    failed = np.zeros(len(query_cells), bool)
    step = max(1, _ROW_BLOCK // max(len(log_pop), 1))         # a block of rows stays in cache
    index = np.empty((min(step, len(shift)), len(log_pop)), np.int64)
    for start in range(0, len(shift), step):
        rows = slice(start, start + step)
        idx = np.add(table["flat"][None, :], shift[rows, None], out=index[:len(shift[rows])])
        block = out[rows]
        np.subtract(log_pop, table["decay"][idx], out=block)
        mass = table["kernel"][idx]
        mass *= pop
        z = mass.sum(axis=1)          # pairwise sums of a row: the same floats in any block
        bad = ~(z > 0) | ~np.isfinite(z)
        failed[rows] = bad
        z[bad] = 1.0
        block -= (np.log(z) - table["floor"])[:, None]
    return failed


def _normaliser(d, beta, offset):
    """Log-normaliser ``log Z0(i)`` of the gravity scores of every distinct current cell i of
    one city's likelihood data, and the mean ``log(d + offset)`` under that distribution.

    On a bounding box of at most :data:`_FFT_CELLS` cells, ``Z0`` is the convolution of the
    grid of popularity shares with the kernel ``(d + offset)^-beta`` (distances between
    centroids are ``cell_size x hypot(dx, dy)`` on a grid), computed for all cells at once
    by FFT; else the sums are computed directly, chunk by chunk.
    """
    grid = d.get("grid")
    cache = d.get("cache")
    if grid is not None:
        if cache is None or cache[0] != offset:
            w, h = grid["shape"]
            dx, dy = np.arange(1 - w, w), np.arange(1 - h, h)
            cache = d["cache"] = (offset, np.log(grid["cell_size"] * np.hypot(dx[:, None], dy) + offset))
        ld = cache[1]
        floor = ld[grid["shape"][0] - 1, grid["shape"][1] - 1]        # log(offset): distance 0
        kernel = np.exp(-beta * (ld - floor))                         # <= 1, no underflow at 0
        pop = np.zeros(grid["shape"])
        pop.ravel()[grid["flat"]] = np.exp(d["log_pop"])
        z = signal.fftconvolve(kernel, pop, mode="valid").ravel()[grid["query_flat"]]
        m = signal.fftconvolve(kernel * ld, pop, mode="valid").ravel()[grid["query_flat"]]
        return np.log(z) - beta * floor, m / z
    query, xy, log_pop = d["query"], d["xy"], d["log_pop"]
    n_u, n_cells = len(query), len(log_pop)
    if (cache is None or cache[0] != offset) and n_u * n_cells <= _CACHE_ENTRIES:
        cache = d["cache"] = (offset, _log_distance(query, xy, offset))
    cached = cache is not None and cache[0] == offset
    log_z0, mean_ld = np.empty(n_u), np.empty(n_u)
    step = max(1, _CHUNK_ENTRIES // n_cells)
    for a in range(0, n_u, step):
        ld = cache[1][a:a + step] if cached else _log_distance(query[a:a + step], xy, offset)
        g = log_pop - beta * ld
        top = g.max(axis=1)
        e = np.exp(g - top[:, None])
        z = e.sum(axis=1)
        log_z0[a:a + step] = top + np.log(z)
        mean_ld[a:a + step] = np.einsum("ij,ij->i", e, ld) / z
    return log_z0, mean_ld


def _ll_additive(d, theta, offset):
    """Log-likelihood (summed over one city's targets) and gradient of the additive model
    ``g + count_weight * count + recency_weight * recency`` (gravity alone: theta = (beta,)).

    The normaliser of a token is ``Z0(i) + sum over its history cells of exp(g) (exp(h) - 1)``
    (h >= 0: the history terms): ``Z0(i)`` once per distinct current cell i, the history
    correction per sparse entry.
    """
    beta = theta[0]
    wc, wr = (theta[1], theta[2]) if len(theta) > 1 else (0.0, 0.0)
    log_pop, u, target = d["log_pop"], d["u"], d["target"]
    n_t = len(target)
    grad = np.zeros(len(theta))
    log_z0, mean_ld = _normaliser(d, beta, offset)
    ld_t = np.log(d["d_target"] + offset)
    score_t = log_pop[target] - beta * ld_t
    a_t = log_z0[u]
    if len(theta) > 1 and len(d["token"]):
        token = d["token"]
        ld_e = np.log(d["d_entry"] + offset)
        h = wc * d["count"] + wr * d["recency"]
        g_e = log_pop[d["cell"]] - beta * ld_e
        shift = a_t.copy()
        np.maximum.at(shift, token, g_e + h)
        full = np.exp(g_e + h - shift[token])           # mass of a history cell
        extra = full * -np.expm1(-h)                   # its mass beyond gravity alone
        w0 = np.exp(a_t - shift)
        z = w0 + np.bincount(token, extra, n_t)
        log_z = shift + np.log(z)
        e_ld = (w0 * mean_ld[u] + np.bincount(token, extra * ld_e, n_t)) / z
        score_t = score_t + wc * d["count_target"] + wr * d["recency_target"]
        grad[1] = np.sum(d["count_target"] - np.bincount(token, full * d["count"], n_t) / z)
        grad[2] = np.sum(d["recency_target"] - np.bincount(token, full * d["recency"], n_t) / z)
    else:
        log_z, e_ld = a_t, mean_ld[u]
    grad[0] = np.sum(e_ld - ld_t)
    return np.sum(score_t - log_z), grad


def _ll_mixture(d, theta, offset):
    """Log-likelihood (summed over one city's targets) and gradient of the mixture
    ``h H + (1 - h) (p Pop + (1 - p) G)``, theta = (beta, h = history_weight,
    p = popularity_weight, recency_weight)."""
    beta, h, p, rho = theta
    log_z0, mean_ld = _normaliser(d, beta, offset)
    u, target = d["u"], d["target"]
    ld_t = np.log(d["d_target"] + offset)
    num = d["count_target"] + rho * d["recency_target"]
    den = d["count_total"] + rho * d["recency_total"]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_g = d["log_pop"][target] - beta * ld_t - log_z0[u]
        log_pop = d["log_pop"][target]
        log_e = np.logaddexp(np.log(p) + log_pop, np.log1p(-p) + log_g)     # exploration
        log_h = np.where(num > 0, np.log(num) - np.log(den), -np.inf)
        log_p = np.logaddexp(np.log1p(-h) + log_e, np.log(h) + log_h)
        share_e = np.exp(np.log1p(-h) + log_e - log_p)     # (1 - h) E / P
        share_h = np.exp(np.log(h) + log_h - log_p)        # h H / P
        gravity_in_e = np.exp(np.log1p(-p) + log_g - log_e)
        grad = np.array([
            np.sum(share_e * gravity_in_e * (mean_ld[u] - ld_t)),
            np.sum(share_h / h - share_e / (1 - h)) if 0 < h < 1 else 0.0,
            np.sum(share_e * (np.exp(log_pop - log_e) - np.exp(log_g - log_e))),
            np.sum(np.where(num > 0, share_h * (d["recency_target"] / num - d["recency_total"] / den), 0.0)),
        ])
    return np.sum(log_p), grad


def _centroids(table, cells):
    return table.grid.centroid_metres(cells[:, 0], cells[:, 1])


def _check_real(name, value, low, low_open, none_ok, high=None):
    if value is None and none_ok:
        return
    bad = (isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value)
           or value < low or (low_open and value == low) or (high is not None and value >= high))
    if bad:
        what = f"a finite number {'>' if low_open else '>='} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{name} must be {what}{' or None' if none_ok else ''}, got {value!r}.")


class GravityBaseline(_CountingBaseline):
    """Gravity model: popular cells close to the current cell come next.

    The score of a candidate cell c after a visit to cell i is the log-probability ::

        score(c | i) = log(share_c) - beta * log(d(i, c) + offset) - log Z(i)

    with ``d(i, c)`` the distance in metres between the centroids of the two cells on the
    city's grid, ``share_c = (n_c + 1) / (N + n_cells)`` the cell's share of the city's
    training visits, Laplace-smoothed (one pseudo-visit per cell of the vocabulary) so that a
    cell nobody visited in training ranks below visited cells at the same distance but is not
    impossible, and ``Z(i)`` the normaliser over the city's cells (the softmax of the
    scores): popularity x ``(d + offset)^-beta``, a gravity law.

    ``beta`` and ``offset`` are fitted by maximum likelihood of the observed next cells of
    held-out training users: ``validation_fraction`` of every city's training users (drawn
    with :class:`~sklearn.model_selection.GroupShuffleSplit`) are held out, popularity is
    counted on the other users, and for every offset of ``offset_grid`` the log-likelihood,
    concave in ``beta``, is maximised with L-BFGS-B. The offset is then chosen by
    ``selection``: by default the one whose fit ranks the held-out targets best (Acc@1),
    as the likelihood of a next-cell law this simple can favour large offsets that rank
    worse (for the mixture of :class:`HistoryGravityBaseline` on Foursquare NYC it picks
    1000-2000 m, whose fit has an Acc@1 1.5 points below that of 250 m on validation
    users). The final model counts popularity on all training users. One set of parameters
    is fitted on all cities of the training data jointly and shared by every city (also
    cities added later with :meth:`partial_fit`): distance decay is the city-invariant part
    of the model, what differs between cities is their popularity.

    Measured on validation users (users split 70/10/20 with seed 0, 500 m cells, 3-day
    windows, every position, full ranking, pessimistic ties): Foursquare NYC Acc@1 .304 / MRR
    .357 (beta 1.4, offset 50 m; history frequency .290 / .416), YJMob100K
    city A (1,000 users) .206 / .279 (beta 1.9, offset 100 m; history frequency .223 / .325).
    See :class:`HistoryGravityBaseline` for the model that also copies the user's history.

    The current cell needs only grid coordinates, so a visit to a cell outside the
    vocabulary is scored from its own centroid too (where the batch carries grid cells, as
    it does when scored through :meth:`predict`, :meth:`target_ranks` and the like; else
    such a visit is ranked by popularity alone).

    Scoring is vectorised over the distinct current cells of a batch: the distance decay
    ``beta log(d + offset)`` depends only on the grid offset between two cells, so it is
    computed once per call for every offset of the city's bounding box, and the row of a
    current cell is a gather from that table, its normaliser a float64 sum of
    ``share x exp(-decay)`` (no ``exp`` nor ``log`` per cell); tokens share the row of their
    current cell, a block of rows at a time. Cells outside the box (or a box of more than
    :data:`_DECAY_ENTRIES` offsets) are scored from their centroids. Scores stay float64:
    rounded to float32, the rows tie cells whose float64 scores differ (on YJMob100K city A,
    30 test users, one rank of 2,914 changed under the mixture of
    :class:`HistoryGravityBaseline`), and rankings never reward ties (the lower cell id wins
    them). Rankings are those of the centroid computation (tested, and on NYC and YJMob100K
    city A equal to those of the release before); values agree within a few ulps.

    Parameters
    ----------
    encoder : SpatialSemanticEncoder or None, default None
        Template of the grid (cloned in fit); None = ``SpatialSemanticEncoder()``.
    window_days : int, default 3
        Length of the evaluation windows in days.
    min_stays : int, default 5
        Evaluation windows with fewer visits are not scored by :meth:`target_ranks`, nor used
        by the likelihood of the parameter search.
    max_tokens : int, default 144
        Longer windows are cut (into pieces of ``max_tokens`` stays).
    city_tz : dict of str -> str, optional
        Time zone per city (see :func:`trajmoe.sequences.time_features`).
    beta : float >= 0 or None, default None
        Distance-decay exponent (no unit); None = fitted.
    offset : float > 0 or None, default None
        Metres added to every distance (so that the current cell, d = 0, has a finite
        score); None = fitted: the best of ``offset_grid``.
    offset_grid : sequence of float > 0, default (50, 100, 250, 500, 1000, 2000)
        Offsets tried (metres) when ``offset`` is None.
    selection : {"accuracy", "likelihood"}, default "accuracy"
        How the offset is chosen among those of ``offset_grid`` (each with its
        maximum-likelihood weights): the best Acc@1 on (at most 3,000 of) the held-out
        targets, ties going to the higher likelihood; or the best likelihood.
    validation_fraction : float in (0, 1), default 0.2
        Share of every city's training users held out to fit the parameters (at least one, and
        never every user of a city). Where none of the drawn users has a target (a window of
        ``min_stays`` visits with a next visit; a few users), the share is drawn again among
        the users that have one, with a :class:`~trajmoe.exceptions.DataWarning`.
    max_fit_targets : int or None, default 20000
        At most this many held-out targets (drawn at random) enter the likelihood, which
        bounds the cost of the search; None = all.
    random_state : int, RandomState instance or None, default None
        Seeds the held-out users and the draws of targets.

    Attributes
    ----------
    encoder_ : SpatialSemanticEncoder
        Fitted grid, vocabulary and visit counts of every city.
    cities_ : list of str
    beta_ : float
        Fitted (or given) distance-decay exponent.
    offset_ : float
        Fitted (or given) offset in metres.
    log_likelihood_ : float
        Mean log-likelihood (nats) per held-out target of the selected parameters; NaN when
        every parameter was given (no search).
    n_fit_targets_ : int
        Held-out targets of the likelihood (0 without search).
    search_results_ : DataFrame or None
        One row per offset tried: ``offset`` (metres), the maximum-likelihood weights for it
        (``beta``, ...), ``log_likelihood`` (mean per held-out target) and, with
        ``selection="accuracy"``, ``acc@1`` (held-out); None without search.
    time_zones_, time_forms_
        As in :class:`PopularityBaseline`.

    See Also
    --------
    HistoryGravityBaseline : the gravity model combined with the user's visits so far in
        the window.

    References
    ----------
    .. [1] G. K. Zipf, "The P1 P2/D hypothesis: on the intercity movement of persons",
       American Sociological Review 11(6), 677-686, 1946 (the gravity model).
    .. [2] F. Simini, M. C. Gonzalez, A. Maritan, A.-L. Barabasi, "A universal model for
       mobility and migration patterns", Nature 484, 96-100, 2012 (gravity and radiation
       models of human mobility).
    .. [3] The project's method page (docs/method.rst, "What the public data shows"): ranking every cell by popularity x
       (d + 250 m)^-beta from the current cell reaches Acc@1 .306 on NYC validation users
       (history frequency .290).

    Examples
    --------
    >>> import pandas as pd
    >>> from trajmoe import GravityBaseline
    >>> X = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "day": 0, "slot": [0, 1, 2, 0, 1],
    ...                   "x": [0, 1, 8, 8, 8], "y": 0})
    >>> model = GravityBaseline(beta=2.0, offset=250.0, min_stays=1).fit(X)
    >>> visit = pd.DataFrame({"user_id": [3], "day": [5], "slot": [0], "x": [1], "y": [0]})
    >>> model.predict_topk(visit, k=2)[0].tolist()
    [['city:1_0', 'city:0_0']]

    Cell (8, 0) is the most visited, but 3.5 km away: the current cell and its visited
    neighbour come first.
    """

    _parameter_constraints: dict = {
        **NextLocationEstimator._parameter_constraints,
        "beta": [Interval(Real, 0, None, closed="left"), None],
        "offset": [Interval(Real, 0, None, closed="neither"), None],
        "offset_grid": ["array-like"],
        "selection": [StrOptions(set(_SELECTION))],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "max_fit_targets": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }
    #: Parameters that must also be finite.
    _finite = ("beta", "offset")

    def __init__(self, encoder=None, window_days=3, min_stays=5, max_tokens=144, city_tz=None,
                 beta=None, offset=None, offset_grid=(50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0),
                 selection="accuracy", validation_fraction=0.2, max_fit_targets=20000, random_state=None):
        super().__init__(encoder=encoder, window_days=window_days, min_stays=min_stays,
                         max_tokens=max_tokens, city_tz=city_tz)
        self.beta = beta
        self.offset = offset
        self.offset_grid = offset_grid
        self.selection = selection
        self.validation_fraction = validation_fraction
        self.max_fit_targets = max_fit_targets
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # the held-out users of the parameter search are drawn with random_state
        tags.non_deterministic = self.random_state is None
        return tags

    def fit(self, X, y=None, pois=None):
        """Count visits of every city in X and fit the shared parameters.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame of the training users.
        y : None
            Ignored.
        pois : DataFrame, optional
            POI frame, passed to the encoder (it only widens the cell vocabulary here).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If a parameter is invalid, or a parameter is to be fitted but the held-out users
            have no target (too few users, or windows shorter than ``min_stays``).
        """
        return self._learn(X, pois, partial=False)

    def partial_fit(self, X, y=None, pois=None):
        """Add the visits of X to the counts (new cities are registered).

        The shared parameters are fitted on the first call (as :meth:`fit`) and kept by later
        calls: they are city-invariant, so a new city only brings its popularity. Call
        :meth:`fit` to fit them again.

        Returns
        -------
        self
        """
        return self._learn(X, pois, partial=True)

    # ------------------------------------------------------------------ fitting
    def _weight_names(self):
        """Names of the weights fitted at every offset (and of their fitted attributes)."""
        return ("beta",)

    def _log_likelihood(self, data, theta, offset):
        """Held-out log-likelihood summed over the targets of every city, and its gradient."""
        ll, grad = 0.0, np.zeros(len(theta))
        for d in data:
            ll_c, grad_c = _ll_additive(d, theta, offset)
            ll, grad = ll + ll_c, grad + grad_c
        return ll, grad

    def _check_scoring_params(self):
        super()._check_scoring_params()
        for name in self._finite:           # an interval's constraint admits infinity
            _check_real(name, getattr(self, name), 0.0, False, True)

    def _check_params(self, partial=False):
        super()._check_params(partial)
        if not len(self.offset_grid):
            raise ValueError(f"offset_grid must be a non-empty sequence of metres > 0, got {self.offset_grid!r}.")
        for value in self.offset_grid:
            _check_real("every value of offset_grid", value, 0.0, True, False)

    def _learn(self, X, pois, partial):
        search = not (partial and hasattr(self, "beta_"))
        X = self._fit_encoder(X, pois, partial)
        if search:
            self._search(X)     # on error, fit is undone as a whole (atomic fits)
        return self

    def _search(self, X):
        names = self._weight_names()
        fixed = {n: float(getattr(self, n)) for n in names if getattr(self, n) is not None}
        free = [n for n in names if n not in fixed]
        offsets = [float(self.offset)] if self.offset is not None else [float(o) for o in self.offset_grid]
        if not free and len(offsets) == 1:
            self._set_fitted({**fixed, "offset": offsets[0]}, np.nan, 0, None)
            return
        data = self._likelihood_data(X)
        n_targets = sum(len(d["target"]) for d in data)
        by_accuracy = self.selection == "accuracy" and len(offsets) > 1
        if by_accuracy:                        # the same targets for every offset
            rng = check_random_state(self.random_state)
            chosen = np.sort(rng.permutation(n_targets)[:_SELECTION_TARGETS])
            bounds = np.cumsum([0] + [len(d["target"]) for d in data])
            for i, d in enumerate(data):
                d["select"] = chosen[(chosen >= bounds[i]) & (chosen < bounds[i + 1])] - bounds[i]
        rows = []
        for offset in offsets:
            weights, ll = self._maximise(data, n_targets, offset, fixed, free)
            rows.append({"offset": offset, **weights, "log_likelihood": ll})
            if by_accuracy:
                rows[-1]["acc@1"] = self._heldout_accuracy(data, rows[-1])
        columns = ["offset", *names, "log_likelihood"] + (["acc@1"] if by_accuracy else [])
        results = pd.DataFrame(rows, columns=columns)
        # the best Acc@1 (ties: the higher likelihood), or the best likelihood
        key = [(r.get("acc@1", 0.0), r["log_likelihood"]) for r in rows]
        best = rows[max(range(len(rows)), key=key.__getitem__)]
        self._set_fitted(best, best["log_likelihood"], n_targets, results)

    def _heldout_accuracy(self, data, values):
        """Acc@1 (ties pessimistic) of the held-out targets of ``d["select"]`` under the
        parameters ``values``, scored as :meth:`_batch_scores` does (with the popularity of
        the fitting users)."""
        hits = total = 0
        for d in data:
            n_cells = len(d["log_pop"])
            token = d["token"]
            chosen = d["select"]
            log_z0 = _normaliser(d, values["beta"], values["offset"])[0]
            step = max(1, _CHUNK_ENTRIES // n_cells)
            for start in range(0, len(chosen), step):
                rows = chosen[start:start + step]
                keys, inverse = np.unique(d["u"][rows], return_inverse=True)
                log_g = _gravity(d["log_pop"], d["xy"], d["query"][keys], values["beta"], values["offset"],
                                 log_norm=log_z0[keys])
                # history entries of the chosen tokens (entries are sorted by token)
                lo, hi = np.searchsorted(token, rows), np.searchsorted(token, rows, side="right")
                entry = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)]) if len(rows) else lo
                local = np.repeat(np.arange(len(rows)), hi - lo)
                history = (local, d["cell"][entry], d["count"][entry], d["recency"][entry])
                scores = self._combine(log_g[inverse.ravel()], d["log_pop"], history, values)
                truth = scores[np.arange(len(rows)), d["target"][rows]]
                hits += int(np.sum(np.sum(scores >= truth[:, None], axis=1) == 1))
            total += len(chosen)
        return hits / total

    def _set_fitted(self, values, log_likelihood, n_targets, results):
        for name in (*self._weight_names(), "offset"):
            setattr(self, name + "_", float(values[name]))
        self.log_likelihood_ = float(log_likelihood)
        self.n_fit_targets_ = int(n_targets)
        self.search_results_ = results

    def _maximise(self, data, n_targets, offset, fixed, free):
        """Weights maximising the mean held-out log-likelihood at one offset (L-BFGS-B)."""
        names = self._weight_names()
        index = [names.index(n) for n in free]

        def full(x):
            theta = np.array([fixed.get(n, 0.0) for n in names])
            if index:
                theta[index] = x
            return theta

        def objective(x):
            ll, grad = self._log_likelihood(data, full(x), offset)
            return -ll / n_targets, -grad[index] / n_targets

        if free:
            res = optimize.minimize(objective, np.array([_START[n] for n in free]), jac=True,
                                    method="L-BFGS-B", bounds=[_BOUNDS[n] for n in free])
            theta = full(res.x)
        else:
            theta = full(np.zeros(0))
        ll = self._log_likelihood(data, theta, offset)[0] / n_targets
        return dict(zip(names, map(float, theta))), float(ll)

    def _likelihood_data(self, X):
        """Held-out targets of every city, with what the likelihood needs."""
        prep = self._prepare(X)
        windows = self._windows(prep, min_stays=self.min_stays)
        owner = np.where(windows.row[:, 0] >= 0, prep.user_key[np.maximum(windows.row[:, 0], 0)], -1)
        held_users = self._held_out_users(prep)
        # a window of two visits or more has a target (with min_stays=1 a window may have none)
        with_target = np.unique(owner[(windows.row >= 0).sum(axis=1) >= 2])
        if not np.isin(with_target, held_users).any():
            held_users = self._redraw_held_out(prep, with_target, held_users)
        held = np.isin(prep.user_key, held_users)
        windows = windows.subset(np.isin(owner, held_users))
        history = len(self._weight_names()) > 1
        data = []
        for c, city in enumerate(self.cities_):
            table = self.encoder_.cities_[city]
            n_cells = table.n_locations
            fit_rows = (prep.city_index == c) & ~held & (prep.location >= 0)
            parts = {"row": [], "current": [], "target": [], "token": [], "cell": [], "count": [], "recency": []}
            n_tokens = 0
            city_windows = windows.subset(windows.city == c)
            for _, b, width, batch, valid in self._iter_batches(city_windows):
                parts["row"].append(city_windows.row[b, :width][valid])
                parts["current"].append(self._current_keys(batch, valid, table))
                parts["target"].append(city_windows.next_location[b, :width][valid])
                if history:
                    token, cell, count, recency = self._history_terms(batch["location"], n_cells)
                    for name, v in zip(("token", "cell", "count", "recency"), (token + n_tokens, cell, count, recency)):
                        parts[name].append(v)
                n_tokens += int(valid.sum())
            parts = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in parts.items()}
            # the tokens in the order of their visits, whatever the batches (_iter_batches orders
            # the windows by length): the draws of max_fit_targets and of the selection's targets
            # are by index, and the likelihood's sums run in this order
            order = np.argsort(parts.pop("row"), kind="stable")
            parts["current"], parts["target"] = parts["current"][order], parts["target"][order]
            if history:
                place = np.empty_like(order)
                place[order] = np.arange(len(order))
                token = place[parts["token"]]
                by_token = np.argsort(token, kind="stable")
                parts.update(token=token[by_token], **{k: parts[k][by_token] for k in ("cell", "count", "recency")})
            data.append({"table": table, "n_tokens": n_tokens,
                         "log_pop": _log_popularity(np.bincount(prep.location[fit_rows], minlength=n_cells)),
                         **parts})
        return self._draw_targets(data)

    def _redraw_held_out(self, prep, eligible, drawn):
        """Held-out users drawn again among the ``eligible`` users (those with a target), where
        none of the ``drawn`` ones has one (a few users, most with short windows); a
        DataWarning says so. Returns ``drawn`` unchanged where no city has such a user."""
        held = self._held_out_users(prep, among=eligible)
        if not len(held):
            return drawn
        warnings.warn(
            f"{type(self).__name__}: none of the {len(drawn)} users held out (validation_fraction="
            f"{self.validation_fraction}) has a window of at least min_stays={self.min_stays} visits with a "
            f"next visit; {len(held)} of the {len(eligible)} users that have one {'is' if len(held) == 1 else 'are'} "
            "held out instead to fit the parameters. So few held-out targets fit them poorly: give more "
            "users or a larger validation_fraction.", DataWarning, stacklevel=7)
        return held

    def _draw_targets(self, data):
        """Keep targets inside the vocabulary whose current cell has coordinates, at most
        ``max_fit_targets`` of them, and lay out the arrays of the likelihood."""
        ok = [(d["target"] >= 0) & (d["current"] >= 0) for d in data]
        total = int(sum(k.sum() for k in ok))
        if total == 0:
            raise ValueError(
                f"No target to fit the parameters of {type(self).__name__} on: the held-out users "
                f"(validation_fraction={self.validation_fraction}) have no window of at least "
                f"min_stays={self.min_stays} visits with a next visit. Give more users, lower "
                "min_stays, or give every parameter (beta, offset, ...) a value.")
        if self.max_fit_targets is not None and total > self.max_fit_targets:
            rng = check_random_state(self.random_state)
            drawn = np.zeros(total, bool)
            drawn[rng.choice(total, self.max_fit_targets, replace=False)] = True
            bounds = np.cumsum([0] + [int(k.sum()) for k in ok])
            for i, k in enumerate(ok):
                k[np.flatnonzero(k)] = drawn[bounds[i]:bounds[i + 1]]
        out = []
        for d, k in zip(data, ok):
            if not k.any():
                continue
            table = d["table"]
            xy = _centroids(table, table.cells)
            keys, u = np.unique(d["current"][k], return_inverse=True)
            u = u.ravel()
            query = _centroids(table, cells_of_keys(keys))
            target = d["target"][k]
            n_t = len(target)
            item = {"log_pop": d["log_pop"], "xy": xy, "query": query, "u": u, "target": target,
                    "d_target": np.hypot(*(query[u] - xy[target]).T), "grid": None}
            both = np.vstack([table.cells, cells_of_keys(keys)])
            low, shape = both.min(axis=0), both.max(axis=0) - both.min(axis=0) + 1
            if np.prod(shape.astype(float)) <= _FFT_CELLS:
                flat = (both[:, 0] - low[0]) * shape[1] + (both[:, 1] - low[1])
                item["grid"] = {"shape": tuple(int(v) for v in shape), "cell_size": float(table.grid.cell_size),
                                "flat": flat[:len(table.cells)], "query_flat": flat[len(table.cells):]}
            new_index = np.full(d["n_tokens"], -1)
            new_index[k] = np.arange(n_t)
            e = new_index[d["token"]] >= 0
            token, cell = new_index[d["token"][e]], d["cell"][e]
            count, recency = d["count"][e].astype(np.float64), d["recency"][e].astype(np.float64)
            hit = cell == target[token]
            item.update(token=token, cell=cell, count=count, recency=recency,
                        d_entry=np.hypot(*(query[u[token]] - xy[cell]).T),
                        count_target=np.bincount(token[hit], count[hit], n_t),
                        recency_target=np.bincount(token[hit], recency[hit], n_t),
                        count_total=np.bincount(token, count, n_t),
                        recency_total=np.bincount(token, recency, n_t))
            out.append(item)
        return out

    # ------------------------------------------------------------------ scoring
    def _windows(self, prep, stride_days=None, min_stays=1):
        """Windows that also carry the grid cell of every token (``cell_ix``, ``cell_iy``),
        so that a current cell outside the vocabulary keeps its position."""
        windows = super()._windows(prep, stride_days=stride_days, min_stays=min_stays)
        cell = getattr(prep, "cell", None)
        if cell is not None and len(cell):
            safe = np.maximum(windows.row, 0)
            windows.cell_ix = np.where(windows.row >= 0, cell[safe, 0], 0)
            windows.cell_iy = np.where(windows.row >= 0, cell[safe, 1], 0)
        return windows

    def _iter_batches(self, windows):
        for c, b, width, batch, valid in super()._iter_batches(windows):
            if hasattr(windows, "cell_ix"):
                batch = dict(batch, cell_ix=windows.cell_ix[b, :width], cell_iy=windows.cell_iy[b, :width])
            yield c, b, width, batch, valid

    @staticmethod
    def _current_keys(batch, valid, table):
        """Cell key of the current cell of every valid token, -1 where its position is unknown
        (an out-of-vocabulary cell of a batch without grid cells)."""
        if "cell_ix" in batch:
            return cell_keys(batch["cell_ix"][valid], batch["cell_iy"][valid])
        loc = batch["location"][valid]
        known = loc < table.n_locations
        keys = np.full(len(loc), -1, np.int64)
        keys[known] = table.keys[loc[known]]
        return keys

    def _history_terms(self, location, n_cells):
        """``(token, cell, count, recency)`` of :func:`_history`: the history entries the
        combined rule of :class:`HistoryGravityBaseline` reads."""
        return _history(location, n_cells)

    def _current_cells(self, batch, city):
        """Distinct current cells of the valid tokens of a batch: their keys (sorted, -1 where
        the position is unknown), shape (n_distinct,), and the index of every valid token's
        cell among them, shape (n_valid,)."""
        valid = batch["location"] != PAD
        keys, inverse = np.unique(self._current_keys(batch, valid, self.encoder_.cities_[city]),
                                  return_inverse=True)
        return keys, inverse.ravel()

    def _gravity_rows(self, city, keys, out=None):
        """Gravity log-probabilities after a visit to each of the cells ``keys``.

        Rows of cells inside the bounding box of the city's cells are read off the table of
        grid offsets (:func:`_decay_table`, once per call), the others (unknown position, far
        away) computed from the centroids (:func:`_gravity`).

        Parameters
        ----------
        city : str
        keys : ndarray of int64, shape (n_query,)
            Cell keys of the current cells (-1: position unknown, popularity alone).
        out : ndarray of float64, shape (n_query, n_cells), optional
            Filled and returned (a buffer reused across blocks); else allocated.

        Returns
        -------
        ndarray of float64, shape (n_query, n_cells)
        """
        table = self.encoder_.cities_[city]
        log_pop = self._memo(("log_pop", city), lambda: _log_popularity(table.visit_counts))
        decay = self._memo(("decay", city), lambda: _decay_table(table.cells, table.grid.cell_size,
                                                                   self.beta_, self.offset_))
        rows = np.empty((len(keys), len(log_pop))) if out is None else out
        located = np.flatnonzero(keys >= 0)
        inside = np.zeros(len(keys), bool)
        if decay is not None and len(located):
            rel = cells_of_keys(keys[located]) - decay["low"]
            inside[located] = (rel >= 0).all(axis=1) & (rel < np.array(decay["shape"])).all(axis=1)
        if inside.all():
            inside[_gravity_from_table(log_pop, decay, cells_of_keys(keys), rows)] = False
        elif inside.any():
            fast = np.flatnonzero(inside)
            part = np.empty((len(fast), len(log_pop)))
            failed = _gravity_from_table(log_pop, decay, cells_of_keys(keys[fast]), part)
            rows[fast] = part
            inside[fast[failed]] = False
        rest = np.flatnonzero(~inside)
        if len(rest):             # unknown positions, cells outside the box (or underflow)
            query = np.full((len(rest), 2), np.nan)
            known = keys[rest] >= 0
            query[known] = _centroids(table, cells_of_keys(keys[rest][known]))
            rows[rest] = _gravity(log_pop, _centroids(table, table.cells), query, self.beta_, self.offset_)
        return rows

    def _fitted_values(self):
        """The parameters of the fit (whatever ``combine`` says now), by name."""
        return {name: getattr(self, name + "_") for name in _FITTED if hasattr(self, name + "_")}

    def _combine(self, log_g, log_pop, history, values):
        """Scores of the model from the gravity log-probabilities of every token.

        Parameters
        ----------
        log_g : ndarray of float64, shape (n_tokens, n_cells)
            Gravity log-probabilities (modified in place).
        log_pop : ndarray of float64, shape (n_cells,)
            Laplace-smoothed log popularity shares.
        history : tuple of ndarray
            ``(token, cell, count, recency)`` of :func:`_history`.
        values : dict of str -> float
            The parameters.

        Returns
        -------
        ndarray of float64, shape (n_tokens, n_cells)
        """
        return log_g

    def _batch_scores(self, batch, city):
        keys, inverse = self._current_cells(batch, city)
        table = self.encoder_.cities_[city]
        values = self._fitted_values()
        history = self._history_terms(batch["location"], table.n_locations) if len(values) > 2 else None
        return self._combine(self._gravity_rows(city, keys)[inverse], _log_popularity(table.visit_counts),
                             history, values)

    def _batch_rank(self, batch, city, k, truth, values=True):
        """Top-k and ranks of a batch, a block of distinct current cells at a time.

        The tokens are grouped by current cell; the gravity rows of a block of cells (at most
        :data:`_CHUNK_ENTRIES` scores, in one buffer reused by every block) are combined with
        the history entries of their tokens (:meth:`_sparse_combine`) and ranked by
        :func:`~trajmoe.estimators._scoring.rank_sparse`: the results of the dense scores,
        without a row per token nor one per distinct cell of the whole batch. The additive
        combination (a normaliser per token) is ranked densely, block by block.
        """
        fitted = self._fitted_values()
        if "count_weight" in fitted:
            return NextLocationEstimator._batch_rank(self, batch, city, k, truth, values)
        keys, inverse = self._current_cells(batch, city)
        table = self.encoder_.cities_[city]
        n, n_cells = len(inverse), table.n_locations
        log_pop = self._memo(("log_pop", city), lambda: _log_popularity(table.visit_counts))
        history = self._history_terms(batch["location"], n_cells) if len(fitted) > 2 else None
        kk = None if k is None else min(int(k), n_cells)
        ids = None if k is None else np.zeros((n, kk), np.int64)
        top = None if k is None else np.zeros((n, kk))
        ranks = None if truth is None else np.zeros(n, np.int64)
        order = np.argsort(inverse, kind="stable")                 # tokens grouped by current cell
        step = max(1, _CHUNK_ENTRIES // max(n_cells, 1))
        bounds = np.searchsorted(inverse[order], np.arange(0, len(keys) + step, step))
        buffer = np.empty((min(step, len(keys)), n_cells))
        local = np.full(n, -1)
        for i, a in enumerate(range(0, len(keys), step)):
            tokens = order[bounds[i]:bounds[i + 1]]
            rows = self._gravity_rows(city, keys[a:a + step], out=buffer[:len(keys[a:a + step])])
            part = None
            if history is not None:
                local[tokens] = np.arange(len(tokens))
                entry = local[history[0]] >= 0
                part = (local[history[0][entry]], *(v[entry] for v in history[1:]))
                local[tokens] = -1
            base, row_of, token, cell, value = self._sparse_combine(rows, inverse[tokens] - a, log_pop, part, fitted)
            got = rank_sparse(base, row_of, token, cell, value, k, None if truth is None else truth[tokens])
            if k is not None:
                ids[tokens], top[tokens] = got[0], got[1]
            if truth is not None:
                ranks[tokens] = got[2]
        return ids, top, ranks

    def _sparse_combine(self, rows, inverse, log_pop, history, values):
        """:meth:`_combine` as base rows (of distinct current cells) and entries.

        Returns
        -------
        base, row_of, token, cell, value
            As the arguments of :func:`~trajmoe.estimators._scoring.rank_sparse`; the same
            floats as :meth:`_combine` of ``rows[inverse]``.
        """
        empty = np.zeros(0, np.int64)
        return rows, inverse, empty, empty, np.zeros(0)


class HistoryGravityBaseline(GravityBaseline):
    """Gravity model combined with the user's visits so far in the window (copying).

    About half of all next visits return to a cell already visited in the window; a gravity
    model covers the rest. Let ``G(c)`` be the gravity probability of cell c after the
    current visit (popularity x distance decay, see :class:`GravityBaseline`), ``Pop(c)``
    the cell's (Laplace-smoothed) popularity share, ``count_t(c)`` the number of visits to c
    so far in the window (the current visit included) and ``recency_t(c) = 1 / (1 + t -
    t_last)`` (t_last: position of the last visit to c so far; 1 for the current cell, 0 for
    a cell not visited yet). Two ways to combine them (``combine``):

    - ``"mixture"`` (default): a return to the history with probability ``history_weight``
      (preferential return: in proportion to the visits), else an exploration, drawn from
      popularity alone with probability ``popularity_weight`` (a long trip) or from the
      gravity model::

          P(c) = history_weight (count_t(c) + recency_weight recency_t(c)) / sum over cells
                 + (1 - history_weight) (popularity_weight Pop(c)
                                         + (1 - popularity_weight) G(c))

    - ``"additive"``: the history terms are added to the gravity log-score (its
      log-likelihood is concave in the three weights)::

          score(c) = log G(c) + count_weight count_t(c) + recency_weight recency_t(c)

    Scores are the model's log-probabilities (log of the mixture, or the log-softmax of the
    additive score over the city's cells). The parameters are fitted as in
    :class:`GravityBaseline`, one set shared by every city: for every offset of the grid,
    ``beta`` and the weights of the combination maximise the likelihood of the next cells
    of held-out training users (L-BFGS-B); the offset is then chosen by ``selection``. The
    mixture is the default because it ranks better. On validation users (as measured in
    :class:`GravityBaseline`): Foursquare NYC Acc@1 .328 / MRR .453 (beta 2.0, offset 250 m,
    history weight .45, popularity weight .21, recency weight 0), against .317 / .396 for
    the additive form fitted the same way and .290 / .416 for history frequency; YJMob100K
    city A .224 / .344 (beta 3.5, offset 2000 m, history weight .44, popularity weight 0,
    recency weight 4.4), against .215 / .316 and .223 / .325. Under the additive form, a
    return to a distant cell (home, 5 km away) has to overcome the distance penalty of the
    gravity log-score, so the fit lowers ``beta`` for every target; the mixture keeps
    returning and exploring apart. A cell outside the
    vocabulary is not counted in the history (it is not a candidate); a visit without any
    known cell in its history so far is scored as an exploration.

    Parameters
    ----------
    encoder, window_days, min_stays, max_tokens, city_tz, beta, offset
        As in :class:`GravityBaseline`.
    offset_grid, selection, validation_fraction, max_fit_targets, random_state
        As in :class:`GravityBaseline`.
    combine : {"mixture", "additive"}, default "mixture"
        How gravity and history are combined (see above).
    history_weight : float in [0, 1) or None, default None
        Mixture only: probability that the next cell is a return to the window's history;
        None = fitted.
    popularity_weight : float in [0, 1) or None, default None
        Mixture only: probability that an exploration ignores distance (drawn from
        popularity alone); None = fitted.
    count_weight : float >= 0 or None, default None
        Additive only: score per visit to the cell so far in the window; None = fitted.
    recency_weight : float >= 0 or None, default None
        Weight of the recency term (mixture: relative to one visit; additive: score of a
        cell visited at the current position); None = fitted.
    moves_weight : float >= 0, default 0
        Fixed, not fitted: each earlier move of the window from the current cell to a cell
        counts as ``moves_weight`` more visits to it (``count_t(c)`` becomes ``count_t(c) +
        moves_weight moves_t(c)``; at ``A`` again after ``A -> B``, ``B`` has one move), as
        in :class:`HistoryFrequencyBaseline`. 0 is the rule above; the benchmarks and the demo
        also run 4 (``history_gravity_moves``, chosen on validation users; docs/results.rst).

    Attributes
    ----------
    beta_, offset_, recency_weight_ : float
        Fitted (or given) parameters (offset in metres).
    history_weight_, popularity_weight_ : float
        Mixture only: fitted (or given) weights.
    count_weight_ : float
        Additive only: fitted (or given) count weight.
    log_likelihood_, n_fit_targets_, search_results_, encoder_, cities_, time_zones_, time_forms_
        As in :class:`GravityBaseline`.

    See Also
    --------
    HistoryFrequencyBaseline : the history terms alone, with fixed weights.
    GravityBaseline : the distance and popularity terms alone.

    References
    ----------
    .. [1] G. K. Zipf, "The P1 P2/D hypothesis: on the intercity movement of persons",
       American Sociological Review 11(6), 677-686, 1946.
    .. [2] F. Simini, M. C. Gonzalez, A. Maritan, A.-L. Barabasi, "A universal model for
       mobility and migration patterns", Nature 484, 96-100, 2012.
    .. [3] C. Song, T. Koren, P. Wang, A.-L. Barabasi, "Modelling the scaling properties of
       human mobility", Nature Physics 6, 818-823, 2010 (exploration and preferential
       return).
    .. [4] The project's method page (docs/method.rst, "What the public data shows"): a rescaled gravity score plus
       0.05 x (visits in the window + 0.5 x recency), tuned on the validation users
       themselves, reaches Acc@1 .326-.336 on NYC, against .290 for history frequency.

    Examples
    --------
    >>> import pandas as pd
    >>> from trajmoe import HistoryGravityBaseline
    >>> X = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "day": 0, "slot": [0, 1, 2, 0, 1],
    ...                   "x": [0, 1, 8, 8, 8], "y": 0})
    >>> model = HistoryGravityBaseline(beta=2.0, offset=250.0, history_weight=0.5,
    ...                                popularity_weight=0.0, recency_weight=0.0,
    ...                                min_stays=1).fit(X)
    >>> visits = pd.DataFrame({"user_id": 3, "day": 5, "slot": [0, 1, 2, 3],
    ...                        "x": [8, 8, 8, 1], "y": 0})
    >>> model.predict_topk(visits, k=2)[0][-1].tolist()
    ['city:8_0', 'city:1_0']

    After three visits to (8, 0) and one to (1, 0), the history puts 3/4 of its weight on
    (8, 0), 3.5 km away: it comes first, before the current cell.
    """

    _parameter_constraints: dict = {
        **GravityBaseline._parameter_constraints,
        "combine": [StrOptions({"mixture", "additive"})],
        "history_weight": [Interval(Real, 0, 1, closed="left"), None],
        "popularity_weight": [Interval(Real, 0, 1, closed="left"), None],
        "count_weight": [Interval(Real, 0, None, closed="left"), None],
        "recency_weight": [Interval(Real, 0, None, closed="left"), None],
        "moves_weight": [Interval(Real, 0, None, closed="left")],
    }
    _finite = GravityBaseline._finite + ("count_weight", "recency_weight", "moves_weight")

    def __init__(self, encoder=None, window_days=3, min_stays=5, max_tokens=144, city_tz=None,
                 beta=None, offset=None, combine="mixture", history_weight=None, popularity_weight=None,
                 count_weight=None, recency_weight=None, moves_weight=0.0,
                 offset_grid=(50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0), selection="accuracy",
                 validation_fraction=0.2, max_fit_targets=20000, random_state=None):
        super().__init__(encoder=encoder, window_days=window_days, min_stays=min_stays,
                         max_tokens=max_tokens, city_tz=city_tz, beta=beta, offset=offset,
                         offset_grid=offset_grid, selection=selection,
                         validation_fraction=validation_fraction, max_fit_targets=max_fit_targets,
                         random_state=random_state)
        self.combine = combine
        self.history_weight = history_weight
        self.popularity_weight = popularity_weight
        self.count_weight = count_weight
        self.recency_weight = recency_weight
        self.moves_weight = moves_weight

    def _history_terms(self, location, n_cells):
        # the moves enter as visits: count + moves_weight x moves (fixed, not fitted)
        if not self.moves_weight:
            return _history(location, n_cells)
        token, cell, count, recency, moves = _history(location, n_cells, moves=True)
        return token, cell, count + self.moves_weight * moves, recency

    def _weight_names(self):
        if self.combine == "additive":
            return ("beta", "count_weight", "recency_weight")
        return ("beta", "history_weight", "popularity_weight", "recency_weight")

    def _log_likelihood(self, data, theta, offset):
        if self.combine == "additive":
            return super()._log_likelihood(data, theta, offset)
        ll, grad = 0.0, np.zeros(len(theta))
        for d in data:
            ll_c, grad_c = _ll_mixture(d, theta, offset)
            ll, grad = ll + ll_c, grad + grad_c
        return ll, grad

    def _set_fitted(self, values, log_likelihood, n_targets, results):
        for name in ("count_weight_", "history_weight_", "popularity_weight_"):   # of another combine
            self.__dict__.pop(name, None)
        super()._set_fitted(values, log_likelihood, n_targets, results)

    def _sparse_combine(self, rows, inverse, log_pop, history, values):
        # the mixture of _combine, with the same floating-point operations in the same order
        h, p = values["history_weight"], values["popularity_weight"]
        out = rows
        if p > 0:
            out += np.log1p(-p)
            np.logaddexp(out, np.log(p) + log_pop, out=out)
        token, cell, count, recency = history
        if h == 0 or not len(token):
            return out, inverse, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        n_tokens = len(inverse)
        out += np.log1p(-h)
        weight = count + values["recency_weight"] * recency
        total = np.bincount(token, weight, n_tokens)
        value = np.logaddexp(out[inverse[token], cell], np.log(h) + np.log(weight / total[token]))
        # tokens without history: an exploration, the rows with the shift undone
        alone = np.flatnonzero(total == 0)
        if len(alone):
            shifted, back = np.unique(inverse[alone], return_inverse=True)
            inverse = inverse.copy()
            inverse[alone] = len(out) + back.ravel()
            out = np.concatenate([out, out[shifted] - np.log1p(-h)])
        return out, inverse, token, cell, value

    def _combine(self, log_g, log_pop, history, values):
        token, cell, count, recency = history
        n_tokens = len(log_g)
        out = log_g
        if "count_weight" in values:                           # additive
            out[token, cell] += values["count_weight"] * count + values["recency_weight"] * recency
            return _log_softmax_rows(out)
        h, p = values["history_weight"], values["popularity_weight"]
        if p > 0:
            out += np.log1p(-p)
            np.logaddexp(out, np.log(p) + log_pop, out=out)
        if h == 0 or not len(token):
            return out
        out += np.log1p(-h)
        weight = count + values["recency_weight"] * recency
        total = np.bincount(token, weight, n_tokens)
        out[total == 0] -= np.log1p(-h)                        # no history: an exploration
        out[token, cell] = np.logaddexp(out[token, cell], np.log(h) + np.log(weight / total[token]))
        return out

