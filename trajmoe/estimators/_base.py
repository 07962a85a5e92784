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
import copy
import functools
import inspect
import math
import numbers
import threading
import warnings
import weakref
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils import RegressorTags
from sklearn.utils._param_validation import Interval, InvalidParameterError
from sklearn.utils.validation import check_is_fitted

from .. import metrics
from .._constants import PAD, TOKEN_FEATURES
from .._encoded import carried
from .._version import __version__
from .._validation import check_protocol, check_time_zone
from .._warnings import caller_stacklevel
from ..encoder import SpatialSemanticEncoder, cell_labels, validate_positional
from ..exceptions import DataWarning, ModelVersionWarning, SharedUsersWarning, UnknownCityError
from ..schema import CITY, DEFAULT_CITY, STARTED_AT, USER, duplicated_rows, format_rows, row_hash, user_codes, user_text
from ..sequences import make_windows, time_features, time_forms, token_batches, window_bounds
from ._scoring import rank_blocks

__all__ = ["NextLocationEstimator", "Prepared", "scoring_lock"]


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
    twin : ndarray of int64, shape (n_rows,), optional
        For every row of X (n_rows of them, exact duplicates included), the position in X of
        the row whose results it takes: itself, or for an exact duplicate (dropped: it is not
        in ``order``) the row it repeats. None: X had no duplicates (n_rows = n).
    """

    order: np.ndarray
    location: np.ndarray
    user_key: np.ndarray
    city_index: np.ndarray
    times: pd.DataFrame
    cell: np.ndarray | None = None
    twin: np.ndarray | None = None

    @property
    def n_rows(self):
        """Rows of X (the kept visits and their dropped exact duplicates)."""
        return len(self.order) if self.twin is None else len(self.twin)

    def per_row(self, values):
        """``values`` (one entry per row of X, filled at the kept rows) with every dropped
        exact duplicate given the entry of the row it repeats."""
        return values if self.twin is None else values[self.twin]

    def subset(self, mask):
        """The rows where ``mask`` (bool, shape (n,)) is True, still sorted (``twin`` dropped:
        a subset serves training, which returns nothing per row of X)."""
        return Prepared(order=self.order[mask], location=self.location[mask], user_key=self.user_key[mask],
                        city_index=self.city_index[mask], times=self.times[mask].reset_index(drop=True),
                        cell=None if self.cell is None else self.cell[mask])

    def last_visits(self, fraction):
        """Bool mask, shape (n,): each user's last ``fraction`` of visits in time (a visit at
        position ``i`` of a user's ``n`` visits when ``i / n >= 1 - fraction``, up to float
        rounding: 0.7 of 10 visits is 7)."""
        users = pd.Series(self.user_key)
        position = users.groupby(self.user_key).cumcount() / users.groupby(self.user_key).transform("size")
        return (position >= 1 - fraction - 1e-9).to_numpy()


class NextLocationEstimator(BaseEstimator):
    """Base class of next-location estimators over canonical visit frames.

    Subclasses define the parameters ``encoder``, ``window_days``, ``min_stays``,
    ``max_tokens`` and ``city_tz`` and the fitted attribute ``encoder_``.

    Parameters are declared once, in :attr:`_parameter_constraints` (scikit-learn's
    declaration, which every subclass extends with its own), and checked at the start of every
    ``fit`` and ``partial_fit``, before any work: an invalid value raises
    :class:`sklearn.utils._param_validation.InvalidParameterError` (a ValueError and a
    TypeError) naming the parameter, the value and the allowed values. What one constraint
    cannot say (time zone names, a device torch has, sizes that must divide each other) is
    checked right after, by :meth:`_check_params`.

    X may also be the output of a fitted :class:`SpatialSemanticEncoder` (a pipeline step
    before the estimator): the estimator then reads the visits it carries and uses that encoder
    (see :mod:`trajmoe._encoded`).

    Scored on a city it was not fitted on (``score``, ``target_table``, ``target_ranks``,
    ``predict_and_evaluate``, so ``cross_val_score`` with
    :class:`trajmoe.model_selection.LeaveOneCityOut`), an estimator scores it zero-shot from a
    temporary description of the city built from the frame being scored (and ``pois``), with a
    :class:`~trajmoe.exceptions.ZeroShotWarning`; see :meth:`SpatialSemanticEncoder.with_unseen_cities` for what is read. The
    fitted model is never changed. Predicting on such a city raises
    :class:`~trajmoe.exceptions.UnknownCityError` (a misspelt city is the likelier cause), unless
    asked for with ``predict(X, zero_shot=True)``.

    ``fit`` and ``partial_fit`` are atomic, in every subclass (:meth:`__init_subclass__` wraps
    them): if one raises, the estimator is left exactly as it was before the call (its encoder,
    cities, counts, network weights, optimizer state and history), and a failed first ``fit``
    leaves it unfitted.
    """

    #: Tokens (windows x padded length) scored in one batch, and what a batch costs beyond its
    #: padded tokens, in tokens (:func:`trajmoe.sequences.token_batches`).
    _eval_batch_tokens, _eval_batch_cost = 2048, 256
    #: Attributes that keep what scoring computed across calls (recomputed on demand, never
    #: state): fit and partial_fit drop them, also when they fail; pickles and copies leave them out.
    _caches = ()

    def __init_subclass__(cls, **kwargs):
        """Make the ``fit`` and ``partial_fit`` a subclass defines atomic (:func:`_atomic`)."""
        super().__init_subclass__(**kwargs)
        for name in ("fit", "partial_fit"):
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_atomic", False):
                setattr(cls, name, _atomic(method))

    @contextlib.contextmanager
    def _atomic_update(self):
        """Run a block that updates the fitted state; on any exception, put the state back.

        The state is every attribute that is not a parameter (``get_params(deep=False)``):
        fitted attributes (``encoder_``, ``cities_``, ``net_`` with its weights, optimizer and
        history, ...) and private ones. It is copied before the block (:meth:`_snapshot`) and
        restored on error (:meth:`_thaw`), attributes the block added removed; the exception
        then propagates unchanged. The cost is one copy of the fitted state per call.

        ``encoder_`` is restored in place: it may be a pipeline's encoder step, which this model
        extends with ``partial_fit`` and whose output it recognises by identity, so the step
        object gets its state back and stays this model's encoder.
        """
        params = set(self.get_params(deep=False))
        encoder = self.__dict__.get("encoder_")
        saved = self._snapshot({k: v for k, v in vars(self).items() if k not in params})
        try:
            yield
        except BaseException:
            for key in [k for k in vars(self) if k not in params]:
                del self.__dict__[key]
            restored = self._thaw(saved)
            if encoder is not None:
                state = vars(restored["encoder_"])
                encoder.__dict__.clear()
                encoder.__dict__.update(state)
                restored["encoder_"] = encoder
            self.__dict__.update(restored)
            raise

    def _snapshot(self, state):
        """A copy of ``state`` (attribute name -> value) that a failed update cannot reach: a
        deep copy (a subclass may keep some values another way)."""
        return copy.deepcopy(state)

    def _thaw(self, saved):
        """The attributes of a :meth:`_snapshot`, to put back."""
        return saved

    #: Parameters added after a release, with the value that reproduces what a model saved before
    #: them did (a pickle or a saved folder without them gets this value, not the new default).
    _LEGACY_DEFAULTS: dict = {}

    #: Constraints of the parameters (scikit-learn's ``_parameter_constraints``); subclasses
    #: extend this dict with their own parameters.
    _parameter_constraints: dict = {
        "encoder": [SpatialSemanticEncoder, None],
        "window_days": [Interval(Integral, 1, None, closed="left")],
        "min_stays": [Interval(Integral, 1, None, closed="left")],
        "max_tokens": [Interval(Integral, 1, None, closed="left")],
        "city_tz": "no_validation",             # a name or a dict of names: _check_city_tz
    }

    def __sklearn_tags__(self):
        # rows are visits of a DataFrame, not samples of a 2-D array
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        # every model ranks cells by a real-valued score (the networks regress a query vector):
        # scikit-learn's defaults then split rows with KFold (never stratified by the next
        # location) and score with ``score`` (Acc@1)
        tags.estimator_type = "regressor"
        tags.regressor_tags = RegressorTags()
        return tags

    def __getstate__(self):
        state = {**super().__getstate__(), "_trajmoe_version": __version__}
        for name in self._caches:           # recomputed on demand: never pickled nor copied
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        version = state.pop("_trajmoe_version", None)
        if version is not None and version != __version__:
            warnings.warn(
                f"Unpickling a {type(self).__name__} saved by trajmoe {version} with trajmoe {__version__}: it "
                "usually works, but predictions may differ where the library changed. Refit the model, or "
                "pickle it again with this version.", ModelVersionWarning, stacklevel=2)
        # parameters added after the model was saved: what the model did then, else their defaults
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if param.default is not inspect.Parameter.empty and name not in state:
                state[name] = self._LEGACY_DEFAULTS.get(name, param.default)
        super().__setstate__(state)

    def set_params(self, **params):
        """Set the parameters of this estimator.

        As :meth:`sklearn.base.BaseEstimator.set_params`; ``encoder__<name>`` also works with
        the default ``encoder=None``, which then becomes ``SpatialSemanticEncoder()`` with that
        parameter set (the same encoder None stands for).

        Parameters
        ----------
        **params : dict
            Estimator parameters, or ``encoder__<name>`` parameters of the encoder.

        Returns
        -------
        self
        """
        if self.encoder is None and params.get("encoder", None) is None and any(
                key.startswith("encoder__") for key in params):
            self.encoder = SpatialSemanticEncoder()
        return super().set_params(**params)

    # -------------------------------------------------------------- fitting helpers
    def _check_params(self, partial=False):
        """Validate every parameter before any work (called by every fit and partial_fit).

        Parameters
        ----------
        partial : bool, default False
            Called by ``partial_fit`` (subclasses check what may not change after fit).

        Raises
        ------
        sklearn.utils._param_validation.InvalidParameterError
            A ValueError naming the parameter, its value and the allowed values.
        ValueError
            On an unknown time zone in ``city_tz``.
        """
        self._check_scoring_params()

    def _check_scoring_params(self):
        """Validate every parameter against its constraints (called by every fit and partial_fit,
        and by every predict and score call: ``set_params`` after fit is checked before the
        model scores with it). Raises as :meth:`_check_params`."""
        self._validate_params()
        # scikit-learn's Interval(Integral) accepts True and False (bool is an int): not a count
        for name, constraints in self._parameter_constraints.items():
            value = getattr(self, name, None)
            if (isinstance(value, (bool, np.bool_)) and any(isinstance(c, Interval) for c in constraints)
                    and not any(c in ("boolean", "verbose") for c in constraints if isinstance(c, str))):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be a number, got {value!r} (a bool).")
        self._check_city_tz()

    def _check_city_tz(self):
        tz = self.city_tz
        if tz is None:
            return
        if isinstance(tz, str):
            check_time_zone("city_tz", tz)
            return
        names = tz
        if not isinstance(names, dict):
            raise ValueError(f"city_tz must be a dict of city -> IANA time zone name (or one name for every "
                             f"city), got {type(tz).__name__}.")
        for city, name in names.items():
            check_time_zone(f"city_tz[{city!r}]", name)

    def _fit_encoder(self, X, pois, partial):
        """Check the parameters, then fit (or extend) ``encoder_`` on X.

        Returns
        -------
        DataFrame of shape (n_visits, n_columns)
            The visit frame of X (the visits X carries when it is an encoder's output).
        """
        self._check_params(partial=partial)
        X, encoder = carried(X)
        first = not partial or not hasattr(self, "encoder_")
        if encoder is not None:
            self._check_carried_encoder(encoder, first, pois)
        if first:
            if encoder is not None:
                self.encoder_ = encoder          # fitted by the pipeline step before this one
            else:
                self.encoder_ = clone(self.encoder) if self.encoder is not None else SpatialSemanticEncoder()
                self.encoder_.fit(X, pois=pois)
        else:
            self.encoder_.partial_fit(X, pois=pois)
        self.cities_ = list(self.encoder_.cities_)
        if first:                                            # of an earlier fit
            self.__dict__.pop("time_zones_", None)
            self.__dict__.pop("time_forms_", None)
        self._record_times(X)
        if isinstance(self.city_tz, dict) and set(self.city_tz) - set(self.cities_):
            warnings.warn(
                f"city_tz names cities that are neither in X nor fitted: {sorted(set(self.city_tz) - set(self.cities_))} "
                f"(the model's cities: {self.cities_}). A misspelt name leaves its city's times in their own "
                "zone; a city that comes later with partial_fit gets its zone then.", DataWarning,
                stacklevel=caller_stacklevel())
        keys = _user_keys(X)
        self._fit_user_keys = keys if first else np.union1d(getattr(self, "_fit_user_keys", keys), keys)
        return X

    def _check_carried_encoder(self, encoder, first, pois):
        """X is an encoder's output: that encoder is this model's (one encoder only)."""
        if self.encoder is not None:
            raise ValueError(
                f"X is the output of a SpatialSemanticEncoder (a pipeline step) and this "
                f"{type(self).__name__} has its own encoder={self.encoder!r}: give the encoder once, "
                "either as the pipeline step or as the estimator's encoder parameter.")
        if pois is not None and first:
            # partial_fit extends the step's encoder here (the pipeline only transforms with a fitted
            # step), so the POIs of a new city come with the estimator's parameters then
            raise ValueError(
                "X is the output of a SpatialSemanticEncoder (a pipeline step): give pois to that "
                "step (pipeline.fit(X, spatialsemanticencoder__pois=pois)), not to the estimator; "
                "in a later partial_fit, give them to the estimator (pipeline.partial_fit(X, "
                "<estimator step>__pois=pois)).")
        if not first and encoder is not self.encoder_:
            raise ValueError(
                "X was encoded by another SpatialSemanticEncoder than the one this model was fitted "
                "with: give the model the visits, or the output of its own encoder step.")

    def _visits_of(self, X):
        """The visit frame of X: X itself, or the visits an encoder's output carries (which
        must come from this model's encoder)."""
        visits, encoder = carried(X)
        if encoder is not None and hasattr(self, "encoder_") and encoder is not self.encoder_:
            raise ValueError(
                "X was encoded by another SpatialSemanticEncoder than the one this model was fitted "
                "with: give the model the visits, or the output of its own encoder step.")
        return visits

    def _warn_shared_users(self, X):
        """SharedUsersWarning if X holds users this model was fitted on."""
        fitted = getattr(self, "_fit_user_keys", None)
        if fitted is None or not len(X):
            return
        keys = _user_keys(X)
        shared = int(np.isin(keys, fitted, assume_unique=True).sum())
        if shared:
            warnings.warn(
                f"{shared} of the {len(keys)} users of X were in the data this {type(self).__name__} was "
                "fitted on: it is scored on users it has seen. A cross-validation split by rows (the "
                "default cv, KFold) puts visits of one user in the training and the test fold; split "
                "by users (cv=trajmoe.model_selection.UserKFold(), or GroupKFold with "
                "groups=X['user_id']) or by city (LeaveOneCityOut). For a split by time, filter this "
                "warning (trajmoe.exceptions.SharedUsersWarning).", SharedUsersWarning, stacklevel=4)

    def _n_locations(self):
        return np.array([self.encoder_.cities_[c].n_locations for c in self.cities_], np.int64)

    def _prepare(self, X):
        """The visits of X ready for windowing (:class:`Prepared`).

        Exact duplicate rows (every column equal) are one visit: the first of each group is
        kept, the others are dropped (as the encoder does in fit, which counts them in
        ``encoder_.n_excluded_``) and take the results of the row they repeat
        (:attr:`Prepared.twin`), with a DataWarning outside fit and partial_fit.
        """
        checked = self.__dict__.get("_checked_visits")
        if checked is not None and checked[0] is X:
            visits, cells = checked[1:]          # checked and located by _unseen_cells in this call
        else:
            visits, cells = validate_positional(X, "ignore"), None
        self._check_time_forms(visits)
        visits, twin = _drop_duplicate_visits(visits, X.index, warn=not self.__dict__.get("_updating"))
        located = self.encoder_._locate(visits, validated=True, labels=False,       # checked just above
                                        cells=None if cells is None else cells[visits.index.to_numpy()])[0]
        unknown = set(pd.unique(located[CITY])) - set(self.cities_)
        if unknown:
            raise UnknownCityError(f"Cities {sorted(unknown)} are unknown to this model; register them with "
                                   "partial_fit.")
        times = time_features(visits, self._city_zones(visits))
        user_key = user_codes(visits)
        city_index = pd.Index(self.cities_).get_indexer(located[CITY]).astype(np.int64)
        return Prepared(order=visits.index.to_numpy(np.int64),
                        location=located["location_id"].to_numpy(np.int64),
                        user_key=user_key, city_index=city_index,
                        times=times.reset_index(drop=True),
                        cell=located[["ix", "iy"]].to_numpy(np.int64), twin=twin)

    def _city_zones(self, visits):
        """Time zone each city's tz-aware times are read in: ``city_tz``, else the zone of the
        first fitting frame that had the city's times tz-aware (``time_zones_``, recorded by
        fit and partial_fit), so that the same instants give the same local times whatever
        zone a later frame carries them in (a frame converted to UTC, or to another city's
        zone, scores as the frame fit read). Cities with neither are read in their own zone."""
        if isinstance(self.city_tz, str):
            return dict.fromkeys(self.cities_, self.city_tz)
        return {**self.__dict__.get("time_zones_", {}), **(self.city_tz or {})}

    def _record_times(self, X):
        """Record, for the cities of X that have none yet, the form of their times in
        ``time_forms_`` (see :meth:`_check_time_forms`) and in ``time_zones_`` the named zone
        (not UTC, not a fixed offset) of X's tz-aware ``started_at`` column (see
        :meth:`_city_zones`)."""
        forms = dict(self.__dict__.get("time_forms_", {}))
        for city, form in time_forms(X).items():
            forms.setdefault(city, form)
        self.time_forms_ = forms
        zone = getattr(X[STARTED_AT].dtype, "tz", None) if STARTED_AT in X else None
        # UTC and fixed offsets say nothing of the local time (a DataWarning says so when read)
        name = str(zone).upper() if zone is not None else ""
        if not name or name.startswith(("UTC", "ETC/", "GMT", "Z", "+", "-")):
            return
        # the cities that give their times as started_at (not those of day/slot rows in the frame)
        timed = X[STARTED_AT].notna().to_numpy()
        if not timed.any():
            return
        cities = pd.unique(X.loc[timed, CITY].astype(str)) if CITY in X else [DEFAULT_CITY]
        recorded = dict(self.__dict__.get("time_zones_", {}))
        for city in cities:
            recorded.setdefault(city, str(zone))
        self.time_zones_ = recorded

    def _check_time_forms(self, visits):
        """DataWarning where a city of ``visits`` gives its times in another form than the
        frame that first fitted it (``started_at`` against ``day``/``slot``): the two number
        weekdays differently, so the model would read other weekday features."""
        fitted = self.__dict__.get("time_forms_")
        if not fitted:
            return
        other = {city: (fitted[city], form) for city, form in time_forms(visits).items()
                 if city in fitted and fitted[city] != form}
        for city, (was, now) in other.items():
            warnings.warn(
                f"city {city!r} was fitted on {was} times and X gives its visits as {now}: the two number "
                "weekdays differently (the calendar for timestamps, day % 7 + 1 for day numbers), so the model "
                f"reads other weekday features than it learned. Give X's times as {was}, as in fit.",
                DataWarning, stacklevel=caller_stacklevel())

    def _held_out_users(self, prep, among=None):
        """User keys of a ``validation_fraction`` share of each city's users, drawn with
        ``random_state``: the users held out in fit. At least one user of a city is held out
        and one kept (cities of one user hold none out). ``among``: the share is drawn from
        these user keys only (those with a target, say), every one of them if need be."""
        held = [np.zeros(0, np.int64)]
        for c in np.unique(prep.city_index):
            users = np.unique(prep.user_key[prep.city_index == c])
            pool = users if among is None else np.intersect1d(users, among)
            n_held = min(math.ceil(self.validation_fraction * len(pool)), len(pool), len(users) - 1)
            if n_held < 1:
                continue
            if n_held == len(pool):          # all of them (a splitter keeps one to train)
                held.append(pool)
                continue
            split = GroupShuffleSplit(n_splits=1, test_size=n_held, random_state=self.random_state)
            held.append(pool[next(split.split(pool, groups=pool))[1]])
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
        ndarray of float, shape (n_valid, n_locations)
            One row per token with ``location != PAD``, in row-major (window, position)
            order; higher is more likely to be the next location.
        """
        raise NotImplementedError

    def _iter_batches(self, windows):
        """Yield (city index, window indices, width, batch, valid) per batch of one city: its
        windows longest first, in batches of similar lengths (:func:`token_batches`)."""
        length = (windows.location != PAD).sum(axis=1)
        for c in range(len(self.cities_)):
            idx = np.flatnonzero(windows.city == c)
            idx = idx[np.argsort(-length[idx], kind="stable")]
            for part, width in token_batches(length[idx], self._eval_batch_tokens, self._eval_batch_cost):
                b = idx[part]
                batch = {k: getattr(windows, k)[b, :width] for k in TOKEN_FEATURES}
                yield c, b, width, batch, batch["location"] != PAD

    def _iter_scores(self, windows):
        """Yield (city index, rows, target_rows, scores) per batch of one city's windows."""
        for c, b, width, batch, valid in self._iter_batches(windows):
            scores = self._batch_scores(batch, self.cities_[c])
            yield c, windows.row[b, :width][valid], windows.target_row[b, :width][valid], scores

    def _batch_rank(self, batch, city, k, truth, values=True):
        """Top-k cells and ranks of the truth for the valid tokens of a batch.

        The default scores the batch with :meth:`_batch_scores` and ranks a block of rows at a
        time (:func:`trajmoe.estimators._scoring.rank_blocks`); a subclass may compute the same
        without the dense score matrix, or rank several batches at once in :meth:`_rank_batches`
        (the neural estimators), which calls this method otherwise.

        Parameters
        ----------
        batch : dict of str -> ndarray of int64, shape (B, L)
            As in :meth:`_batch_scores`.
        city : str
        k : int or None
            Top cells wanted per token (tie rule of :mod:`trajmoe.estimators._scoring`); None:
            none.
        truth : ndarray of int64, shape (n_valid,), or None
            True next cell per valid token (-1 outside the vocabulary, -2 no target: rank 0);
            None: no ranks.
        values : bool, default True
            Whether the caller reads the scores of the top k. False lets a model rank scores
            of the same order that it computes more cheaply (a neural network's logits instead
            of its log-probabilities, :func:`trajmoe.nn.ranking_scores`); the values returned
            are then those scores.

        Returns
        -------
        ids : ndarray of int64, shape (n_valid, min(k, n_locations)), or None
        values : ndarray of float64, same shape, or None
            Scores of those cells, best first.
        ranks : ndarray of int64, shape (n_valid,), or None
            As :func:`trajmoe.metrics.target_ranks` (pessimistic ties).
        """
        scores = self._batch_scores(batch, city)
        return rank_blocks(lambda index: scores[index], len(scores), scores.shape[1], k, truth)

    def _iter_ranked(self, windows, k=None, truth=None, values=True):
        """One pass over the windows: yield ``(city index, rows, ids, values, ranks)`` per batch.

        Windows are batched by city and by length (:meth:`_iter_batches`), so that batches carry
        little padding; ``rows`` (the sorted visit row of every valid token) say where each result
        belongs. ``truth`` (ndarray of int64 over the sorted visit rows, or None) holds the true
        next cell of every row to rank (-1 outside the vocabulary, -2 not ranked); ``ids``,
        ``values``, ``ranks`` are those of :meth:`_batch_rank` (``values``: whether the scores
        of the top k are read).
        """
        with self._scoring_call():
            batches = ((c, windows.row[b, :width][valid], batch)
                       for c, b, width, batch, valid in self._iter_batches(windows))
            yield from self._rank_batches(batches, k, truth, values)

    def _rank_batches(self, batches, k, truth, values):
        """Yield ``(city index, rows, ids, values, ranks)`` for ``batches``, an iterable of
        ``(city index, rows, batch)`` (``rows``: the sorted visit row of every valid token of
        ``batch``), as :meth:`_iter_ranked` describes them: :meth:`_batch_rank` of one batch at
        a time. A subclass may rank the tokens of several batches together (one yield for all
        of them)."""
        for c, rows, batch in batches:
            yield (c, rows, *self._batch_rank(batch, self.cities_[c], k, None if truth is None else truth[rows],
                                              values=values))

    @contextlib.contextmanager
    def _scoring_call(self):
        """While the block runs, :meth:`_memo` keeps what it computes: the model does not change
        during one call, so what depends only on the model and the city (a candidate matrix,
        sorted popularity) is computed once for all batches, and dropped afterwards."""
        if getattr(self, "_call_memo", None) is not None:      # nested: the outer block owns it
            yield
            return
        self._call_memo = {}
        try:
            yield
        finally:
            self.__dict__.pop("_call_memo", None)

    def _memo(self, key, compute):
        """``compute()``, once per key within a :meth:`_scoring_call` (every time outside)."""
        memo = getattr(self, "_call_memo", None)
        if memo is None:
            return compute()
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    def _visit_windows(self, X):
        check_is_fitted(self, "encoder_")
        prep = self._prepare(X)
        return prep, self._windows(prep)

    @contextlib.contextmanager
    def _unseen_cells(self, X, pois=None, zero_shot=False):
        """Score X with its cells outside the fitted regions (and, with ``zero_shot``, its
        unseen cities).

        Swaps ``encoder_`` for :meth:`SpatialSemanticEncoder.with_unseen_cities` (with
        ``zero_shot``: cities of X the model was not fitted on, described from X and ``pois``;
        DataWarning; else such a city raises UnknownCityError) and then
        :meth:`SpatialSemanticEncoder.with_unseen_cells` (cells outside the fitted regions as extra
        candidates) while the block runs, with ``cities_`` extended accordingly (subclasses
        refresh what they derived from them in :meth:`_vocabulary_changed`), and puts the fitted
        ones back afterwards, also on error: predicting never changes the model. Calls on one
        model from several threads run one at a time (:func:`scoring_lock`), so that none
        sees another's swapped tables.
        """
        with scoring_lock(self):
            check_is_fitted(self, "encoder_")
            self._check_scoring_params()
            fitted, cities = self.encoder_, self.cities_
            base = fitted.with_unseen_cities(X, pois=pois) if zero_shot else fitted
            # X checked once a call: the cells outside the regions and the windows (_prepare) read it
            visits = validate_positional(X, "ignore")
            extended, cells = base._with_unseen_cells(X, visits)
            self.__dict__["_checked_visits"] = (X, visits, cells)
            try:
                if extended is fitted:
                    yield
                    return
                self.encoder_, self.cities_ = extended, list(extended.cities_)
                try:
                    self._vocabulary_changed()
                    yield
                finally:
                    self.encoder_, self.cities_ = fitted, cities
                    self._vocabulary_changed()
            finally:
                self.__dict__.pop("_checked_visits", None)

    def _n_fitted(self):
        """Cells per city that are candidates of its vocabulary (not appended for one
        prediction), int64 (n_cities,); a city scored zero-shot counts its temporary region."""
        return np.array([self.encoder_.cities_[c].n_locations - self.encoder_.cities_[c].n_unseen
                         for c in self.cities_], np.int64)

    def _vocabulary_changed(self):
        """Hook: ``encoder_`` now has other city tables (cells appended for prediction)."""

    def predict_topk(self, X, k=10, zero_shot=False, pois=None):
        """The k most likely next locations after every visit.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame (or a fitted encoder's output carrying it). The history of a
            visit is the visits of the same user before it in its evaluation window
            (``window_days`` long, non-overlapping).
        k : int, default 10
        zero_shot : bool, default False
            Predict a city the model was not fitted on zero-shot (DataWarning; see the class
            notes) instead of raising UnknownCityError.
        pois : DataFrame of shape (n_pois, n_columns), optional
            With ``zero_shot``: POIs of the cities of X the model was not fitted on (their
            zero-shot features).

        Returns
        -------
        labels : ndarray of object (str), shape (n_visits, min(k, N))
            N: the most cells a city of the model has (a larger ``k`` asks for every cell).
            Cell labels ``"<city>:<ix>_<iy>"``, best first (see
            :meth:`SpatialSemanticEncoder.location_table` for centroids); cells of equal score
            by ascending location id, also at the k-th place (the order of a stable sort of all
            the scores, found by a top-k).
        scores : ndarray of float64, shape (n_visits, min(k, N))
            The model's scores of those cells (log-probabilities for neural models).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        ValueError
            If ``k`` is not an int >= 1. A city with fewer cells than another city of the
            model leaves its last columns as None labels with score -inf.
        trajmoe.exceptions.UnknownCityError
            If X holds a city the model was not fitted on and ``zero_shot`` is False.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        X = self._visits_of(X)
        with self._unseen_cells(X, pois, zero_shot=zero_shot):
            return self._predict_topk(X, k)

    def _predict_topk(self, X, k, values=True):
        prep, windows = self._visit_windows(X)
        return self._topk_frames(prep, self._iter_ranked(windows, k=k, values=values), k)[:2]

    def _topk_frames(self, prep, results, k):
        """Labels and scores of the top k per visit (in X's order) from :meth:`_iter_ranked`
        results; also the ranks per sorted visit row where results carry them.

        Ties go to the lower location id (predict's rule; trajmoe.metrics ranks ties
        pessimistically, so with ties Acc@1 can be below the accuracy of predict). An exact
        duplicate row gets the labels and scores of the row it repeats.
        """
        k = min(k, max(len(self.encoder_.cities_[city].cells) for city in self.cities_))   # every cell at most
        labels = np.empty((prep.n_rows, k), dtype=object)
        values = np.full((prep.n_rows, k), -np.inf)
        ranks = np.zeros(len(prep.order), np.int64)
        for c, rows, ids, vals, rank in results:
            kk = ids.shape[1]
            cells = self.encoder_.cities_[self.cities_[c]].cells
            pos = prep.order[rows]
            labels[pos, :kk] = cell_labels(self.cities_[c], cells[ids.ravel(), 0], cells[ids.ravel(), 1]).reshape(ids.shape)
            values[pos, :kk] = vals
            if rank is not None:
                ranks[rows] = rank
        return prep.per_row(labels), prep.per_row(values), ranks

    def predict(self, X, zero_shot=False, pois=None):
        """The most likely next location after every visit.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame (or a fitted encoder's output carrying it).
        zero_shot : bool, default False
            Predict a city the model was not fitted on zero-shot (see :meth:`predict_topk`).
        pois : DataFrame of shape (n_pois, n_columns), optional
            With ``zero_shot``: POIs of the cities of X the model was not fitted on.

        Returns
        -------
        ndarray of object (str), shape (n_visits,)
            One cell label per row of X, in X's order; among cells tied for the best score,
            the one with the lowest location id.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        trajmoe.exceptions.SchemaError
            If X does not follow the data model (the message names the column and the rows).
        trajmoe.exceptions.UnknownCityError
            If X holds a city the model was not fitted on and ``zero_shot`` is False.
        """
        X = self._visits_of(X)
        with self._unseen_cells(X, pois, zero_shot=zero_shot):
            # the labels alone: the scores behind them need not be log-probabilities
            return self._predict_topk(X, 1, values=False)[0][:, 0]

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

    def target_table(self, X, protocol="all", pois=None):
        """Rank, kind (return or explore) and vocabulary status of every evaluated target.

        Targets are the next visits within evaluation windows (``window_days`` long,
        non-overlapping, at least ``min_stays`` visits). Protocol ``"all"`` scores every
        position (teacher forcing, as the reference code); ``"last"`` only the last target
        of every window. Ranks follow :func:`trajmoe.metrics.target_ranks`: full ranking over
        the city's cells, ties pessimistic (every cell tied with the true one counts as ranked
        before it). Cells outside the fitted region are scored on the fly (open vocabulary),
        so a true cell there has a finite rank (and ``oov`` True); a true cell that is no
        candidate at all is a miss with rank :data:`trajmoe.metrics.OOV_RANK` (the largest
        int64, so that MRR and NDCG count it as 0).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame (or a fitted encoder's output carrying it). A city the model
            was not fitted on is scored zero-shot (ZeroShotWarning; see
            :class:`trajmoe.estimators.NextLocationEstimator`).
        protocol : {"all", "last"}, default "all"
        pois : DataFrame of shape (n_pois, n_columns), optional
            POIs of the cities of X the model was not fitted on (their zero-shot features).

        Returns
        -------
        DataFrame of shape (n_targets, 3)
            Index: labels of the rows of X that have a target (the visit whose next visit is
            ranked), in X's order. Columns:

            ``rank`` : int64
                1-based rank of the true next cell (1 = best), or ``OOV_RANK``.
            ``kind`` : str (object dtype under pandas 2, its string dtype under pandas 3)
                ``"return"`` if the true next cell (compared by grid cell, also outside the
                vocabulary) was already visited earlier in the same evaluation window, at or
                before the current visit (the current cell included); else ``"explore"``.
            ``oov`` : bool
                True if the true next cell is outside the city's fitted vocabulary. With the
                open vocabulary such a cell (outside the fitted region) is scored on the fly and
                has a finite rank; only a true cell that is no candidate at all ranks
                ``OOV_RANK``.

        Raises
        ------
        ValueError
            If ``protocol`` is unknown.
        sklearn.exceptions.NotFittedError
            Before fit.

        Warns
        -----
        trajmoe.exceptions.SharedUsersWarning
            If X holds users the model was fitted on (a split by rows, see the warning).

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
        check_protocol(protocol)
        check_is_fitted(self, "encoder_")
        X = self._visits_of(X)
        self._warn_shared_users(X)
        with self._unseen_cells(X, pois, zero_shot=True):
            return self._target_table(X, protocol, self._n_fitted())

    def _target_table(self, X, protocol, n_fitted):
        prep = self._prepare(X)
        windows, truth = self._evaluation_targets(prep, protocol)
        ranks = np.zeros(len(prep.order), np.int64)
        for _, rows, _, _, rank in self._iter_ranked(windows, truth=truth, values=False):
            ranks[rows] = rank
        return self._table(X, prep, windows, truth, ranks, n_fitted)

    def _evaluation_targets(self, prep, protocol):
        """Evaluation windows of the protocol and the true next cell of every sorted visit row
        (-1 outside the vocabulary, -2 for a row without a target)."""
        windows = self._windows(prep, min_stays=self.min_stays)
        if protocol == "last":
            last = (windows.target_row >= 0).sum(axis=1) - 1
            keep = np.zeros_like(windows.target_row, dtype=bool)
            keep[np.arange(len(windows)), np.maximum(last, 0)] = last >= 0
            windows.target_row = np.where(keep, windows.target_row, -1)
        has = windows.target_row >= 0
        truth = np.full(len(prep.order), -2, np.int64)
        truth[windows.row[has]] = prep.location[windows.target_row[has]]
        return windows, truth

    def _table(self, X, prep, windows, truth, ranks, n_fitted):
        """The frame of :meth:`target_table` from the ranks per sorted visit row."""
        returning = self._returning_rows(prep, windows)
        has = windows.target_row >= 0
        rows, target = windows.row[has], windows.target_row[has]
        order = np.argsort(prep.order[rows], kind="stable")
        rows, target = rows[order], target[order]
        kind = np.where(returning[target], "return", "explore").astype(object)
        oov = (truth[rows] < 0) | (truth[rows] >= n_fitted[prep.city_index[target]])
        return pd.DataFrame({"rank": ranks[rows], "kind": kind, "oov": oov}, index=X.index[prep.order[rows]])

    def predict_and_evaluate(self, X, k=10, protocol="all", ks=(1, 3, 5, 10), pois=None):
        """Top-k predictions, target table and metrics from ONE scoring pass over X.

        The same as :meth:`predict_topk`, :meth:`target_table` and
        :func:`trajmoe.metrics.evaluate` called one after the other, at the cost of one of them:
        every visit is scored once, its top k and (where it has an evaluated target) the rank
        of its truth are read off the same scores.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame.
        k : int, default 10
            Predictions per visit.
        protocol : {"all", "last"}, default "all"
            Evaluated targets (see :meth:`target_table`).
        ks : sequence of int, default (1, 3, 5, 10)
            Cut-offs of Acc@k and NDCG@k in the report.
        pois : DataFrame of shape (n_pois, n_columns), optional
            POIs of the cities of X the model was not fitted on (see :meth:`target_table`).

        Returns
        -------
        dict
            ``"labels"`` and ``"scores"``: as :meth:`predict_topk`; ``"table"``: as
            :meth:`target_table`; ``"report"``: as :func:`trajmoe.metrics.evaluate`.

        Raises
        ------
        ValueError
            If ``k`` is not an int >= 1, ``protocol`` is unknown, or X has no evaluated target.
        sklearn.exceptions.NotFittedError
            Before fit.

        Notes
        -----
        A visit's scores depend only on its window, so the results equal those of the separate
        calls; a neural network's scores may differ from them in the last bits of float32, as
        they do whenever the same windows are batched with other windows.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        check_protocol(protocol)
        check_is_fitted(self, "encoder_")
        X = self._visits_of(X)
        self._warn_shared_users(X)
        with self._unseen_cells(X, pois, zero_shot=True):
            n_fitted = self._n_fitted()
            prep, windows = self._visit_windows(X)
            evaluated, truth = self._evaluation_targets(prep, protocol)
            labels, values, ranks = self._topk_frames(prep, self._iter_ranked(windows, k=k, truth=truth), k)
            table = self._table(X, prep, evaluated, truth, ranks, n_fitted)
        report = metrics.ranking_report(table["rank"], ks=ks, kind=table["kind"], oov=table["oov"])
        return {"labels": labels, "scores": values, "table": table, "report": report}

    def target_ranks(self, X, protocol="all", pois=None):
        """Full-ranking rank of the true next location of every evaluated visit.

        The ``rank`` column of :meth:`target_table`: targets are the next visits within
        evaluation windows (``window_days`` long, non-overlapping, at least ``min_stays``
        visits); protocol ``"all"`` scores every position (teacher forcing, as the reference
        code), ``"last"`` only the last target of every window. Ties are pessimistic (every
        cell tied with the true one counts as ranked before it), so with ties Acc@1 can be
        below the accuracy of :meth:`predict`. A true cell outside the fitted region is scored
        on the fly (open vocabulary) and has a finite rank; one that is no candidate at all is
        a miss with rank :data:`trajmoe.metrics.OOV_RANK` (the largest int64, not N + 1), which
        MRR and NDCG count as 0.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame (or a fitted encoder's output carrying it).
        protocol : {"all", "last"}, default "all"
        pois : DataFrame of shape (n_pois, n_columns), optional
            POIs of the cities of X the model was not fitted on (see :meth:`target_table`).

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
        return self.target_table(X, protocol=protocol, pois=pois)["rank"]

    def score(self, X, y=None, pois=None):
        """Acc@1 of next-location prediction on X (protocol "all", full ranking).

        Ties are pessimistic (see :meth:`target_ranks`): a target tied with another cell for
        the best score is a miss, so with ties the score can be below the accuracy of
        :meth:`predict`. The default score of scikit-learn's model selection; other metrics
        by name: ``scoring="mrr"``, ``"acc@5"``, ``"ndcg@10"`` (:mod:`trajmoe.metrics`).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame (or a fitted encoder's output carrying it). A city the model
            was not fitted on is scored zero-shot (ZeroShotWarning; see
            :class:`trajmoe.estimators.NextLocationEstimator`).
        y : None
            Ignored (targets derive from X).
        pois : DataFrame of shape (n_pois, n_columns), optional
            POIs of the cities of X the model was not fitted on (their zero-shot features;
            with metadata routing: ``set_score_request(pois=True)``).

        Returns
        -------
        float
            In [0, 1].
        """
        return metrics.accuracy_at_k(self.target_ranks(X, protocol="all", pois=pois).to_numpy(), 1)


def _user_keys(X):
    """Sorted distinct hashes of the (city, user) pairs of a visit frame, uint64."""
    if not isinstance(X, pd.DataFrame) or USER not in X.columns:
        return np.zeros(0, np.uint64)
    city = X[CITY].astype(str) if CITY in X.columns else pd.Series(DEFAULT_CITY, index=X.index)
    # a number by its value, whatever its type (7, 7.0, "7.0"), as trajmoe.schema.user_order has it
    codes, uniques = pd.factorize(X[USER])
    text = np.array([user_text(u) for u in uniques] + ["nan"], dtype=object)[codes]
    pairs = pd.DataFrame({"city": city.to_numpy(), "user": text})
    return np.unique(pd.util.hash_pandas_object(pairs, index=False).to_numpy())


#: One re-entrant lock per estimator (weakly held: gone with it), taken while it scores.
_SCORING_LOCKS: "weakref.WeakKeyDictionary[object, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def scoring_lock(model):
    """The lock ``model`` holds while it scores (its fitted tables are swapped for extended
    ones meanwhile): not an attribute, so that pickles, copies and clones never carry it.

    Parameters
    ----------
    model : NextLocationEstimator

    Returns
    -------
    threading.RLock
        One per model (held weakly: it goes with the model), re-entrant within a thread.
    """
    with _LOCKS_LOCK:
        lock = _SCORING_LOCKS.get(model)
        if lock is None:
            lock = _SCORING_LOCKS[model] = threading.RLock()
    return lock


def _atomic(method):
    """``method`` (a ``fit`` or ``partial_fit``) run under
    :meth:`NextLocationEstimator._atomic_update`: on any exception the estimator is put back as
    it was. A call made from within another one (a ``fit`` calling its parent's) is covered by
    the outer call's snapshot."""

    @functools.wraps(method)
    def atomic(self, *args, **kwargs):
        if self.__dict__.get("_updating"):
            return method(self, *args, **kwargs)
        for name in self._caches:           # what the model kept for scoring is stale after any fit
            self.__dict__.pop(name, None)
        with self._atomic_update():
            self.__dict__["_updating"] = True
            try:
                return method(self, *args, **kwargs)
            finally:
                self.__dict__.pop("_updating", None)

    atomic._atomic = True
    return atomic


def _drop_duplicate_visits(visits, labels, warn=True):
    """Exact duplicate rows of a visit frame dropped, as the encoder drops them in fit.

    Parameters
    ----------
    visits : DataFrame
        :func:`trajmoe.schema.validate_visits` of X with a positional index (rows sorted, so
        that a duplicate follows the row it repeats).
    labels : Index
        X's index, to name the rows in the warning.
    warn : bool, default True
        DataWarning with the count and the rows.

    Returns
    -------
    visits : DataFrame
        Without the duplicates (the first row of each group kept).
    twin : ndarray of int64, shape (len(visits),), or None
        Position in X of the kept row of every row of X (see :attr:`Prepared.twin`); None
        without duplicates.
    """
    dup = duplicated_rows(visits, row_hash(visits))     # rows sorted by content at equal times
    if not dup.any():
        return visits, None
    position = visits.index.to_numpy(np.int64)
    kept = np.maximum.accumulate(np.where(dup, 0, np.arange(len(dup))))
    twin = np.empty(len(visits), np.int64)
    twin[position] = position[kept]
    if warn:
        n = int(dup.sum())
        warnings.warn(
            f"{n} exact duplicate row{'' if n == 1 else 's'} (every column equal to another row) at rows "
            f"{format_rows(labels[position], dup)}: each visit counts once, so they are left out of the windows, and "
            f"each gets the results of the row it repeats.", DataWarning, stacklevel=2)
    return visits[~dup], twin
