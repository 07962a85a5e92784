"""What trajmoe's neural next-location estimators share: skorch training and inference.

Rows of the frames are visits, not samples, so the estimators compose a skorch
:class:`~skorch.NeuralNet` (``net_``) rather than inheriting from one: they build windows of
tokens, hand them to skorch's training loop as a dataset of single-city batches, and use
skorch's callbacks for early stopping, the learning-rate schedule, gradient clipping and
progress bars. A subclass names its network (:attr:`NeuralNextLocationEstimator._network`, a
:class:`trajmoe.nn.RetrievalNetwork`) and its network parameters
(:meth:`NeuralNextLocationEstimator._module_params`).

skorch stays open to users, as in skorch itself: ``callbacks=`` adds callbacks to the defaults
(``lr_scheduler``, ``early_stopping``, ``clip``, ``progress``), and keyword arguments with a
prefix of :data:`NET_PREFIXES` are routed to the net (``optimizer__weight_decay``,
``iterator_train__num_workers``, ``callbacks__early_stopping__patience``, ...).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import os
import sys
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from skorch.callbacks import Callback, Freezer, GradientNormClipping, ProgressBar
from skorch.helper import predefined_split
from sklearn.base import TransformerMixin
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch.optim.lr_scheduler import MultiStepLR

from .._constants import PAD, TOKEN_FEATURES
from .._warnings import caller_stacklevel
from ..exceptions import DataWarning, UnknownCityError
from ..nn import TrajMoELoss, location_log_probs, ranking_scores
from ..nn.data import CityBatchLoader, WindowDataset
from ..nn.parallel import (DistributedNeuralNet, ShardedCityBatchLoader, is_distributed, is_main_process,
                           rank_device, resume_from_checkpoint)
from ..nn.retrieval import COORD_ENCODINGS, POI_TRANSFORMS
from . import _scoring
from ._base import NextLocationEstimator, scoring_lock
from ._scoring import rank_blocks
from ._tiles import TILE_CELLS, CellTiles, SearchTokens, rank_tokens, searchable
from ._training import (DistributedTrainingNet, EpochSeed, FiniteLoss, ResumableEarlyStopping, ResumableLRScheduler,
                        TrainingNet, ValidRanking, claim_checkpoint_dir, run_fingerprint)

__all__ = ["NeuralNextLocationEstimator", "adamw_matrices_decay", "check_device", "NET_PREFIXES",
           "DEFAULT_CALLBACKS"]

#: Prefixes of the keyword arguments routed to the skorch net: ``module__`` (the network; wins
#: over the estimator's own architecture parameters), ``criterion__`` (:class:`trajmoe.nn.TrajMoELoss`),
#: ``optimizer__`` (:func:`adamw_matrices_decay`), ``iterator_train__`` / ``iterator_valid__``
#: (:class:`trajmoe.nn.CityBatchLoader`, e.g. ``num_workers``) and ``callbacks__<name>__<param>``
#: (a parameter of the callback of that name) or ``callbacks__<name>`` (a callback to put in its
#: place, None to drop it).
NET_PREFIXES = ("module__", "criterion__", "optimizer__", "iterator_train__", "iterator_valid__", "callbacks__")
#: Names of the callbacks the estimators add themselves (``fit``: all that apply; ``partial_fit``:
#: ``finite_loss``, ``epoch_seed``, ``clip`` and ``progress``). ``finite_loss`` stops training at a
#: NaN or infinite loss, ``epoch_seed`` seeds every epoch from ``random_state`` (with an int or a
#: RandomState) and the epoch's number (see :mod:`trajmoe.estimators._training`).
DEFAULT_CALLBACKS = ("finite_loss", "epoch_seed", "valid_ranking", "lr_scheduler", "early_stopping", "clip", "progress")

#: Fewest ``max_epochs`` for which ``fit`` adds its default learning-rate schedule (steps at 40, 60
#: and 90 % of the epochs); a routed ``callbacks__lr_scheduler`` runs at any number of epochs.
MIN_SCHEDULED_EPOCHS = 3

#: What early stopping may monitor on the held-out users: the loss, or a ranking metric
#: recorded by :class:`~trajmoe.estimators._training.ValidRanking`.
MONITORS = ("valid_loss", "valid_mrr", "valid_acc1")
#: What ``fit`` holds out for early stopping: a share of each city's users, or of each user's visits in time.
VALIDATION_SPLITS = ("users", "time")


def adamw_matrices_decay(params, lr, weight_decay=0.1, betas=(0.9, 0.95)):
    """AdamW that decays matrices (ndim >= 2) only, as the reference code.

    Parameters
    ----------
    params : iterable of Tensor
    lr : float
    weight_decay : float, default 0.1
    betas : tuple of float, default (0.9, 0.95)

    Returns
    -------
    torch.optim.AdamW

    References
    ----------
    docs/method.rst, "Training protocol".
    """
    params = [q for p in params for q in (p["params"] if isinstance(p, dict) else [p]) if q.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, foreach=True)


def _autocast_state(device_type):
    """Whether autocast is on for a device type, and its dtype: ``(bool, torch.dtype)``.

    ``torch.is_autocast_enabled(device_type)`` and ``torch.get_autocast_dtype`` exist since
    torch 2.4; before, the CPU and the GPU had functions of their own (trajmoe supports torch >= 2.2).
    """
    try:
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()


class NeuralNextLocationEstimator(TransformerMixin, NextLocationEstimator):
    """Base class of the neural next-location estimators (TrajMoE and its neural baselines).

    ``fit`` pre-trains on every city of X (single-city batches, early stopping on held-out
    users), ``partial_fit`` fine-tunes for ``finetune_epochs`` epochs and registers new
    cities; inference scores the current city's cells by the network's retrieval head. The
    subclass's ``__init__`` defines the parameters (see :class:`TrajMoERegressor`).

    Attributes
    ----------
    encoder_ : SpatialSemanticEncoder
    cities_ : list of str
        Registered cities; index = the network's city index.
    net_ : skorch.NeuralNet
        The trained network (``net_.module_``) and its history.
    final_lr_ : float
        Learning rate at the end of ``fit``, after the schedule's step of the last epoch also when
        early stopping ends training (the default of ``partial_fit``).
    history_ : DataFrame
        Loss and learning rate per epoch (see the property).

    Notes
    -----
    ``set_params`` after fit: the learning rate (``lr``, ``finetune_lr``), ``finetune_epochs``,
    ``batch_size``, ``finetune_batch_size``, ``clip_grad``, ``callbacks``, ``verbose`` and the window parameters take
    effect in the next ``partial_fit``; the architecture (the network's parameters, ``encoder``,
    ``device``, ``weight_decay``, ``time_weight`` and routed ``module__``, ``criterion__``,
    ``optimizer__`` and ``iterator_*__`` parameters) is fixed by ``fit``, and ``partial_fit``
    raises a ValueError naming what changed; ``max_epochs``, ``patience``, ``monitor`` and
    ``validation_fraction`` are ``fit``'s.

    Scoring a city keeps its candidate matrix [N, d] (float32, and the tiles of the tile search)
    for the next calls while the network is unchanged: about N x d x 4 bytes per city scored
    (26 MB for 100,000 cells at d = 64). ``fit``, ``partial_fit``, any in-place change of a
    weight (its version counter) and a replaced submodule drop it; pickles and copies leave it
    out. Changes that no version counter sees (through ``tensor.data``, a ``fused=True`` optimizer
    stepped by hand, a hook, a plain attribute of the network) are not seen: score a copy
    (``copy.deepcopy(model)``) after those.
    """

    #: The network class (a :class:`trajmoe.nn.RetrievalNetwork`); set by subclasses.
    _network = None

    _LEGACY_DEFAULTS = {"monitor": "valid_loss"}    # early stopping watched the loss before 37d379a

    _parameter_constraints: dict = {
        **NextLocationEstimator._parameter_constraints,
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "copy_path": ["boolean"],
        "distance_prior": ["boolean"],
        "coord_encoding": [StrOptions(set(COORD_ENCODINGS))],
        "poi_transform": [StrOptions(set(POI_TRANSFORMS))],
        "time_weight": [Interval(Real, 0, None, closed="left")],
        "stride_days": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "monitor": [StrOptions(set(MONITORS))],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "validation_split": [StrOptions(set(VALIDATION_SPLITS))],
        "finetune_epochs": [Interval(Integral, 1, None, closed="left")],
        "finetune_lr": [Interval(Real, 0, None, closed="left"), None],
        "finetune_batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "finetune_frozen": [tuple, list],
        "clip_grad": [Interval(Real, 0, None, closed="neither"), None],
        "callbacks": [list, None],
        "checkpoint_dir": [str, os.PathLike, None],
        "device": [str, torch.device],          # and a device torch has here: _check_device
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # ----------------------------------------------------------------- parameters
    def get_params(self, deep=True):
        """Parameters of this estimator, the ones routed to the net (:data:`NET_PREFIXES`) included.

        Parameters
        ----------
        deep : bool, default True
            Also the parameters of the encoder (``encoder__<name>``).

        Returns
        -------
        dict of str -> object
        """
        return {**super().get_params(deep=deep), **self._routed()}

    def set_params(self, **params):
        """Set parameters, the ones routed to the net (``optimizer__weight_decay=...``) included.

        Parameters
        ----------
        **params : dict

        Returns
        -------
        self
        """
        names = self._get_param_names()
        routed = [k for k in params if k.startswith(NET_PREFIXES) or (k not in names and k.split("__")[0] not in names)]
        unknown = [k for k in routed if not k.startswith(NET_PREFIXES)]
        if unknown:
            # scikit-learn's set_params raises nothing (fit refuses them); a misspelt name set after fit
            # (learned_weight takes effect in the next prediction) would otherwise change nothing silently
            warnings.warn(f"{type(self).__name__} has no parameter {unknown}: set_params stores it, and the next "
                          f"fit or partial_fit refuses it. Its parameters are {sorted(names)}; parameters routed "
                          f"to the skorch net start with one of {NET_PREFIXES}.", UserWarning, stacklevel=2)
        for key in routed:
            setattr(self, key, params.pop(key))      # routed to the net; checked in fit
        return super().set_params(**params)

    def _routed(self):
        """The keyword arguments beyond the declared parameters: ``{<prefix>__<name>: value}``
        routed to the net (others are refused by fit)."""
        names = self._get_param_names()
        return {k: v for k, v in vars(self).items()
                if k not in names and not k.startswith("_") and not k.endswith("_")}

    def _check_params(self, partial=False):
        super()._check_params(partial)
        for name in ("finetune_lr", "clip_grad", "lr", "weight_decay", "time_weight"):
            value = getattr(self, name, None)
            if value is not None and not np.isfinite(value):
                raise ValueError(f"The {name!r} parameter of {type(self).__name__} must be finite, got {value!r}.")
        check_device(self.device)
        sizes = {k[len("module__"):]: v for k, v in self._module_params().items()}
        d_model, n_heads = sizes.get("d_model"), sizes.get("n_heads")
        if d_model % 4 or (n_heads and d_model % n_heads):
            raise ValueError(f"d_model={d_model} must be divisible by 4 (location tower)"
                             f"{f' and by n_heads={n_heads}' if n_heads else ''}.")
        for entry in self.callbacks or []:
            if not isinstance(_callback_of(entry), Callback):
                raise ValueError(f"callbacks holds {entry!r}: give skorch callbacks (skorch.callbacks.Callback "
                                 "instances) or (name, callback) pairs.")
        names = set(DEFAULT_CALLBACKS) | set(_callback_names(self.callbacks or []))
        for key in self._routed():
            if key == "train_split":
                raise InvalidParameterError(
                    f"{type(self).__name__} takes no train_split: fit holds out validation_fraction of every "
                    "city's USERS for early stopping (a split of windows would put one user on both sides). "
                    "Set validation_fraction (0 = train on all users).")
            if not key.startswith(NET_PREFIXES):
                raise InvalidParameterError(
                    f"{type(self).__name__} got an unknown parameter {key!r}: its parameters are "
                    f"{sorted(self._get_param_names())}, and parameters routed to the skorch net start with "
                    f"one of {NET_PREFIXES}.")
            if key.startswith("module__") and self._network is not None:
                accepted = inspect.signature(self._network).parameters
                if key[len("module__"):] not in accepted:
                    raise ValueError(f"{key}: {self._network.__name__} takes no parameter "
                                     f"{key[len('module__'):]!r}; it takes {sorted(accepted)}.")
            if key.startswith("callbacks__clip__") and not self.clip_grad:
                raise ValueError(f"{key}: clip_grad={self.clip_grad!r} adds no gradient clipping callback to tune; "
                                 "set clip_grad (the clipping norm) to clip.")
            if key.startswith("callbacks__") and key.split("__")[1] not in names:
                raise ValueError(f"{key}: no callback named {key.split('__')[1]!r}; this estimator's callbacks "
                                 f"are {sorted(names)} (the defaults and those of callbacks=).")
            if key in ("callbacks__early_stopping__monitor", "callbacks__early_stopping__lower_is_better"):
                raise ValueError(f"{key}: set the estimator's monitor parameter instead (one of {list(MONITORS)}), "
                                 "which also sets whether higher is better.")
        routed = self._routed()
        tuned = sorted(k for k in routed if k.startswith("callbacks__lr_scheduler__"))
        if (not partial and tuned and self.max_epochs < MIN_SCHEDULED_EPOCHS
                and "callbacks__lr_scheduler" not in routed):
            raise ValueError(f"{tuned[0]}: with max_epochs={self.max_epochs} (< {MIN_SCHEDULED_EPOCHS}) fit adds no "
                             "learning-rate schedule to tune; raise max_epochs, or route a whole scheduler "
                             "(callbacks__lr_scheduler=skorch.callbacks.LRScheduler(...)).")
        if not partial and not self.validation_fraction:
            self._check_validation_callbacks(routed)
        ranking = routed.get("callbacks__valid_ranking", "kept")
        if self.monitor != "valid_loss" and ranking is None:
            raise ValueError(f"monitor={self.monitor!r} watches what the valid_ranking callback records, and "
                             "callbacks__valid_ranking=None drops it: keep the callback or monitor 'valid_loss'.")
        if partial and hasattr(self, "net_"):
            self._check_architecture()

    def _check_validation_callbacks(self, routed):
        """Refuse routed callbacks, and those of ``callbacks=``, that act on validation scores
        when ``validation_fraction=0`` leaves fit none (they would be dropped, or fail after the
        first epoch)."""
        for entry in self.callbacks or []:
            callback = _callback_of(entry)
            if _validation_monitor(callback):
                raise ValueError(
                    f"callbacks: {_callback_name(entry)} monitors {_validation_monitor(callback)!r}, a validation "
                    "score, but validation_fraction=0 holds out nothing to validate on: set validation_fraction "
                    "above 0, or give it monitor=None (or a train_ score).")
        for key, value in routed.items():
            if not key.startswith("callbacks__"):
                continue
            name = key.split("__")[1]
            monitor = getattr(value, "monitor", None) if key == "callbacks__lr_scheduler" else None
            if name in ("early_stopping", "valid_ranking") and (key.count("__") > 1 or value is not None):
                what = "acts on validation scores"
            elif isinstance(monitor, str) and monitor.startswith("valid_"):
                what = f"monitors {monitor!r}, a validation score"
            else:
                continue
            raise ValueError(f"{key} {what}, but validation_fraction=0 holds out nothing to validate on, so "
                             "fit would run it without any: set validation_fraction above 0, or drop it.")

    def _architecture(self):
        """What ``fit`` fixes: the network's parameters, the encoder, the device, the loss and
        the optimizer (dict of name -> value)."""
        params = {k[len("module__"):]: v for k, v in self._module_params().items()}
        params.update(encoder=None if self.encoder is None else self.encoder.get_params(),
                      device=self.device, weight_decay=self.weight_decay, time_weight=self.time_weight)
        params.update({k: v for k, v in self._routed().items() if not k.startswith("callbacks__")})
        return params

    def _check_architecture(self, action="partial_fit continues the fitted network, whose", ignore=()):
        """Raise a ValueError naming what ``set_params`` changed of :meth:`_architecture` since
        ``fit`` (but the names ``ignore``); ``action`` says what needs it unchanged (the message
        goes on with "architecture, encoder, ... cannot change")."""
        fitted = getattr(self, "_fitted_architecture", None)
        if fitted is None:           # a model pickled by an earlier version
            return
        now = self._architecture()
        changed = sorted(k for k in set(fitted) | set(now) if fitted.get(k, None) != now.get(k, None) and k not in ignore)
        if changed:
            # named as the estimator's parameters (the network's max_len is max_tokens)
            detail = ", ".join(f"{'max_tokens' if k == 'max_len' else k}: {fitted.get(k)!r} -> {now.get(k)!r}"
                               for k in changed)
            raise ValueError(
                f"set_params changed what fit fixed ({detail}): {action} "
                "architecture, encoder, device, loss and optimizer cannot change. Set them back, or "
                "call fit to train a new network (lr, finetune_lr, finetune_epochs, batch_size, finetune_batch_size, "
                "finetune_frozen, clip_grad, "
                "callbacks and the window parameters do take effect in partial_fit).")

    def _module_params(self):
        """Keyword arguments of the network, prefixed ``module__`` (skorch)."""
        raise NotImplementedError

    def _device(self):
        if self.device == "auto":
            return rank_device("cuda" if torch.cuda.is_available() else "cpu")
        return rank_device(self.device)

    def _seed(self, offset=0):
        """Integer torch seed of ``random_state`` (+ offset), None for None; a RandomState
        instance gives a new draw on each call."""
        state = self.random_state
        if state is None:
            return None
        if isinstance(state, Integral):
            return int(state) + int(offset)
        return int(state.randint(np.iinfo(np.int32).max))

    def _callbacks(self, validate, schedule=True):
        """The callbacks of a training call: the defaults that apply, then those of ``callbacks=``,
        with the routed ``callbacks__`` parameters applied (list of (name, callback))."""
        routed = {k[len("callbacks__"):]: v for k, v in self._routed().items() if k.startswith("callbacks__")}
        callbacks = [("finite_loss", FiniteLoss())]
        seed = self._seed()
        if seed is not None:
            callbacks.append(("epoch_seed", EpochSeed(seed)))
        if validate:
            callbacks.append(("valid_ranking", ValidRanking(block=_scoring.SCORE_BLOCK)))
        # by epochs: no validation split needed; a routed scheduler (callbacks__lr_scheduler) takes
        # this place whatever the epochs. Before early stopping: a scheduler that steps at the end of
        # an epoch (ReduceLROnPlateau) then records the learning rate of the epoch that stops training
        if schedule and (self.max_epochs >= MIN_SCHEDULED_EPOCHS or "lr_scheduler" in routed):
            milestones = sorted({max(1, int(f * self.max_epochs)) for f in (0.4, 0.6, 0.9)})
            callbacks.append(("lr_scheduler", ResumableLRScheduler(MultiStepLR, milestones=milestones, gamma=0.4)))
        if validate:
            callbacks.append(("early_stopping", ResumableEarlyStopping(
                monitor=self.monitor, patience=self.patience, lower_is_better=self.monitor == "valid_loss",
                load_best=True)))
        if self.clip_grad:
            callbacks.append(("clip", GradientNormClipping(self.clip_grad)))
        if self.verbose and (sys.stderr.isatty() or _in_notebook()) and is_main_process():
            # tqdm's notebook widget in Jupyter (skorch's ProgressBar detects it), a text bar on a terminal
            callbacks.append(("progress", ProgressBar()))
        entries = copy.deepcopy(self.callbacks or [])
        callbacks += [(name, _callback_of(entry)) for name, entry in zip(_callback_names(entries), entries)]
        out, unvalidated = [], []
        for name, callback in callbacks:
            callback = copy.deepcopy(routed[name]) if name in routed else callback
            params = {k[len(name) + 2:]: v for k, v in routed.items() if k.startswith(name + "__")}
            if callback is not None and params:
                callback.set_params(**params)
            if callback is not None and not validate and _validation_monitor(callback):
                unvalidated.append(f"{name} (monitor={_validation_monitor(callback)!r})")
            elif callback is not None:
                out.append((name, callback))
        if unvalidated:
            # partial_fit trains on all of X, and a fit whose held-out part formed no window has
            # no validation either (fit with validation_fraction=0 refuses them up front)
            warnings.warn(f"callbacks {unvalidated} act on validation scores, which this training call does not "
                          "compute (partial_fit fine-tunes on all of X; a fit whose held-out part formed no window "
                          "validates nothing): they are left out of it. Give them monitor=None (or a train_ score) "
                          "to run them there too.", DataWarning,
                          stacklevel=caller_stacklevel())
        return out

    def _new_net(self, valid_dataset, loader=None, schedule=True):
        seed = self._seed()
        # in a process group (torchrun) or on streamed windows: each rank a share of every batch
        if loader is not None or is_distributed():
            net, loader = DistributedTrainingNet, loader or ShardedCityBatchLoader
        else:
            net, loader = TrainingNet, CityBatchLoader
        params = dict(
            module=self._network, **self._module_params(),
            criterion=TrajMoELoss, criterion__time_weight=self.time_weight,
            optimizer=adamw_matrices_decay, optimizer__weight_decay=self.weight_decay, lr=self.lr,
            batch_size=self.batch_size, max_epochs=self.max_epochs,
            iterator_train=loader, iterator_train__shuffle=True, iterator_train__random_state=seed,
            iterator_valid=loader,
            train_split=predefined_split(valid_dataset) if valid_dataset is not None else None,
            callbacks=self._callbacks(valid_dataset is not None, schedule=schedule), device=self._device(),
            verbose=self.verbose if is_main_process() else 0)
        # routed parameters win over the estimator's own (callbacks__ ones are applied above)
        params.update({k: v for k, v in self._routed().items() if not k.startswith("callbacks__")})
        self._fitted_architecture = self._architecture()
        return net(**params)

    def _snapshot(self, state):
        # the net as its pickling state: weights and optimizer as bytes in host memory, not a
        # second copy on the GPU
        net = state.pop("net_", None)
        saved = super()._snapshot(state)
        if net is not None:
            saved["net_"] = _FrozenNet(net)
        return saved

    def _thaw(self, saved):
        saved = super()._thaw(saved)
        if isinstance(saved.get("net_"), _FrozenNet):
            saved["net_"] = saved["net_"].thaw()
        return saved

    def _vocabulary_changed(self):
        self._register_cities(learned=False)
        module = self.net_.module_
        for index in module.cities:
            if index >= len(self.cities_):          # a city registered for one prediction only
                module.unregister_city(index)

    def _register_cities(self, learned=True):
        """Hand every city's feature tables to the network; rebuild the optimizer when the
        network gained learned per-city tables (a new city, or a grown vocabulary).
        ``learned=False``: the feature tables only (cells appended for a prediction)."""
        module = self.net_.module_
        device = self.net_.device
        keys = getattr(self, "_city_keys", {})
        changed = False
        for index, city in enumerate(self.cities_):
            table = self.encoder_.cities_[city]
            new_keys = table.keys
            old_keys = keys.get(city)
            keep = None
            if learned and old_keys is not None and not np.array_equal(old_keys, new_keys):
                pos = np.minimum(np.searchsorted(old_keys, new_keys), max(len(old_keys) - 1, 0))
                keep = np.where((len(old_keys) > 0) & (old_keys[pos] == new_keys), pos, -1)
            metres = table.grid.centroid_metres(table.cells[:, 0], table.cells[:, 1]) - table.coord_mean
            changed |= module.register_city(index, torch.as_tensor(table.poi_counts, device=device),
                                            torch.as_tensor(table.coords(), device=device),
                                            torch.as_tensor(table.popularity, device=device),
                                            metres=torch.as_tensor(metres, dtype=torch.float32, device=device),
                                            keep=keep, learned=learned)
            if learned:
                keys[city] = new_keys
        self._city_keys = keys
        if changed:
            self.net_.initialize_optimizer()

    def _training_windows(self, X, holdout, require=True):
        """Sliding training windows of X; with holdout, also non-overlapping validation
        windows: of a share of each city's users (``validation_split="users"``) or of each
        user's last visits in time (``"time"``: the earlier visits train). With ``require``, a
        ValueError where no window has a target (:meth:`_check_training_windows`)."""
        prep = self._prepare(X)
        held = bool(holdout and self.validation_fraction)
        by_time = held and self.validation_split == "time"
        valid = None
        if by_time:
            late = prep.last_visits(self.validation_fraction)
            kept = prep.subset(~late)
            valid = self._windows(prep.subset(late), min_stays=self.min_stays)
        else:
            kept = prep
            val_users = self._held_out_users(prep) if held else np.zeros(0, np.int64)
            if np.isin(prep.user_key, val_users).any():
                valid = self._windows(prep, min_stays=self.min_stays)
                valid = valid.subset(np.isin(prep.user_key[np.maximum(valid.row[:, 0], 0)], val_users))
        if valid is not None:
            # a window of one stay has no next location to score
            valid = valid.subset((valid.row >= 0).sum(axis=1) >= 2)
            if not len(valid):           # nothing to validate on: the held-out users or visits train
                valid, kept = None, prep
                if by_time:
                    warnings.warn(
                        f"validation_split='time': the last {self.validation_fraction:g} of each user's visits "
                        f"form no window of at least min_stays={self.min_stays} visits with a next visit, so fit "
                        "trains on every visit without validation (no early stopping). Raise "
                        "validation_fraction or lower min_stays to validate.", DataWarning, stacklevel=4)
        train = self._windows(kept, stride_days=self.stride_days, min_stays=self.min_stays)
        if valid is not None and not by_time:        # the held-out users' windows do not train
            train = train.subset(~np.isin(prep.user_key[np.maximum(train.row[:, 0], 0)], val_users))
        if require:
            self._check_training_windows(len(train), bool(((train.row >= 0).sum(axis=1) >= 2).any()), by_time)
        return train, valid

    def _check_training_windows(self, n_windows, has_target, by_time):
        """Raise a ValueError where ``n_windows`` training windows (``has_target``: whether one
        of them holds two stays or more) give nothing to train on; ``by_time``: the last visits
        of each user were held out (``validation_split="time"``)."""
        if not n_windows:
            held_out = (f" validation_split='time' holds out the last {self.validation_fraction:g} of each user's "
                        "visits: lower validation_fraction to train on more of them." if by_time else "")
            raise ValueError(
                f"No training window: no user of X has min_stays={self.min_stays} visits within "
                f"window_days={self.window_days} days, the least a training window holds. Lower min_stays or "
                f"raise window_days, or give users with more visits.{held_out}")
        if not has_target:
            default = inspect.signature(type(self)).parameters["max_tokens"].default
            raise ValueError(
                f"No training target: every training window holds one stay (max_tokens={self.max_tokens}), "
                f"whose next location lies in another window. Raise max_tokens (the default is {default}).")

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, pois=None):
        """Pre-train on every city of X (single-city batches, early stopping on held-out users).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame of one or several cities (``city`` column).
        y : None
            Ignored: targets are the next visits.
        pois : DataFrame, optional
            POI frame for the location features (see :class:`SpatialSemanticEncoder`).

        Returns
        -------
        self

        Raises
        ------
        trajmoe.schema.SchemaError
            If X is not a valid visit frame.
        ValueError
            If no window has ``min_stays`` visits, a parameter is invalid, or ``checkpoint_dir``
            holds the checkpoint of another run.
        trajmoe.exceptions.NonFiniteLossError
            If a batch loss is NaN or infinite (training diverged).

        Notes
        -----
        Atomic: if fit raises (or is interrupted), the estimator is left as it was before the
        call. With ``checkpoint_dir``, the checkpoints of the epochs that finished stay there,
        and the same fit called again resumes from the last one.
        """
        X = self._fit_encoder(X, pois, partial=False)
        train, valid = self._training_windows(X, holdout=True)
        return self._fit_windows(WindowDataset(train), WindowDataset(valid) if valid is not None else None,
                                 checkpoint_dir=self.checkpoint_dir)

    def _fit_windows(self, train, valid, checkpoint_dir=None):
        """Pre-train a new network on datasets of windows (the training of ``fit``).

        A dataset with a ``batch_loader`` (streamed windows,
        :class:`trajmoe.nn.shards.ParquetWindows`) brings its own loader. With
        ``checkpoint_dir``, rank 0 writes a checkpoint there after every epoch and a run that
        finds one resumes from it (:func:`trajmoe.nn.parallel.resume_from_checkpoint`): the
        weights, optimizer and history, the schedule's step, early stopping's patience and best
        weights, the batch order and (with ``random_state``) the random draws of the next epoch,
        so that it ends as an uninterrupted run. A directory of another run (other data or
        parameters) raises a ValueError (:func:`trajmoe.estimators._training.claim_checkpoint_dir`).
        """
        with self._seeded(0):
            self.net_ = self._new_net(valid, loader=getattr(train, "batch_loader", None))
            self.net_.initialize()
            self._register_cities()
            _check_frozen(self.net_.module_, self.finetune_frozen)     # for the partial_fit calls to come
            epochs = self.max_epochs
            if checkpoint_dir is not None:
                claim_checkpoint_dir(checkpoint_dir, self._run_fingerprint(train, valid))
                done = resume_from_checkpoint(self.net_, checkpoint_dir)
                stopping = dict(self.net_.callbacks_).get("early_stopping")
                stopped = False
                if isinstance(stopping, ResumableEarlyStopping):
                    stopping.dirname = os.fspath(checkpoint_dir)
                    stopped = stopping.replay(self.net_.history)
                epochs = 0 if stopped else max(self.max_epochs - done, 0)
                if done and self.verbose and is_main_process():
                    print(f"resumed from the checkpoint in {os.fspath(checkpoint_dir)}: {done} epoch"
                          f"{'' if done == 1 else 's'} done; " + (f"{epochs} to go" if epochs else
                          "training had finished, nothing to train"), flush=True)
            with _kept(self.net_.module_, self._fit_kept()):
                self.net_.partial_fit(train, epochs=epochs)
            if checkpoint_dir is not None and self._finished():
                # the end of the run too (an epoch where early stopping stopped is not checkpointed):
                # fit again on this directory then returns the model without training
                dict(self.net_.callbacks_)["checkpoint"].save_model(self.net_)
        self.final_lr_ = float(self.net_.optimizer_.param_groups[0]["lr"])
        self._fit_lr = self.lr
        return self

    def _fit_kept(self):
        """Network parts that ``fit`` keeps as initialised (trained by ``partial_fit`` only)."""
        return ()

    def _finished(self):
        """Whether the training of ``fit`` ran to its end: ``max_epochs``, or early stopping
        stopped it (not an interrupt that skorch caught)."""
        stopping = dict(self.net_.callbacks_).get("early_stopping")
        return len(self.net_.history) >= self.max_epochs or (
            isinstance(stopping, ResumableEarlyStopping) and stopping.misses_ >= stopping.patience)

    def _run_fingerprint(self, train, valid):
        """:func:`trajmoe.estimators._training.run_fingerprint` of a ``fit``: the parameters
        (``verbose``, ``device``, ``callbacks`` and ``checkpoint_dir`` aside), the cities and
        their vocabulary sizes, and the arrays of the training and validation windows (for
        streamed windows, which are not in memory, only their numbers)."""
        params = {k: v for k, v in self.get_params(deep=True).items()
                  if k not in ("verbose", "device", "callbacks", "checkpoint_dir", "encoder", "learned_weight")}
        # resumes a checkpoint written before these parameters existed, at the value of then
        for name, before in (("monitor", self._LEGACY_DEFAULTS["monitor"]), ("validation_split", "users")):
            if params.get(name) == before:
                del params[name]
        params.update(cities=list(self.cities_), n_locations=self._n_locations().tolist(),
                      n_windows=[len(d) if d is not None else None for d in (train, valid)])
        windows = [vars(d.windows) for d in (train, valid) if hasattr(d, "windows")]
        arrays = [a for w in windows for _, a in sorted(w.items()) if isinstance(a, np.ndarray)]
        return run_fingerprint(params, arrays)

    def partial_fit(self, X, y=None, pois=None):
        """Fine-tune on X for ``finetune_epochs`` epochs (default ONE), but not ``finetune_frozen``.

        Cities of X that the model does not know are registered on the fly (their
        location features come from X and ``pois``); known cities gain X's cells and
        visit counts. No data is held out and no early stopping applies. On an unfitted
        model, this initialises the network and trains ``finetune_epochs`` epochs.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame (:func:`trajmoe.schema.validate_visits`; or a fitted encoder's
            output carrying it), e.g. 5 % of a new city's users; its cities are registered (a
            new city gets its grid and location table) before training.
        y : None
            Ignored.
        pois : DataFrame, optional
            POI frame of X's cities (:func:`trajmoe.schema.validate_pois`), for a new city's
            POI counts.

        Returns
        -------
        self

        Raises
        ------
        trajmoe.exceptions.SchemaError
            If X or ``pois`` does not follow the data model (the message names the column and
            the rows).
        ValueError
            If a parameter is invalid, ``set_params`` changed what ``fit`` fixed (the
            architecture; the Notes of :class:`trajmoe.estimators.NeuralNextLocationEstimator`), or X has
            no window of ``min_stays`` visits.
        trajmoe.exceptions.NonFiniteLossError
            If a batch loss is NaN or infinite (training diverged).

        Notes
        -----
        Atomic: if partial_fit raises (or is interrupted), the estimator is left exactly as
        it was before the call (encoder, cities, visit counts, weights, optimizer state and
        history): a city of X is registered only by a call that succeeds.

        The learning rate is ``finetune_lr``, by default the one ``fit`` ended with (after
        its step decay): restarting from the initial rate on a few users' windows undid
        what pre-training taught (measured on validation users of Foursquare NYC: Acc@1
        .22-.27 after one epoch on 5 % at lr 1e-3, against .28-.29 at the final 1.6e-4).
        An ``lr`` set with ``set_params`` after ``fit`` is used instead (unless
        ``finetune_lr`` is given). The learning rate is constant within a ``partial_fit``
        call (no schedule); ``finetune_batch_size`` (else ``batch_size``), ``clip_grad`` and
        ``callbacks`` are read anew; with ``verbose``, a first line says how many windows, epochs,
        which rate and batch size the call fine-tunes with (its epochs are numbered on from
        ``fit``'s, and its loss ranks the new city's own cells, so it does not compare with the
        loss of ``fit``). Small fine-tuning batches matter: one epoch on 5 % of a
        city is a few hundred windows, i.e. 1-5 steps at 64 windows a batch, where the first
        steps on the new city's features moved the network away from what pre-training taught
        and there were no more steps to come back (validation users, seed 0, quick benchmark:
        Gowalla Bay Area Acc@1 .080 at 64 windows a batch, .161 at 16, .254 at 8, .250 at 4;
        NYC .327 / .328 / .327 / .311; YJMob100K A .248 / .248 / .251). It is a trade-off, not
        a free gain: on NYC validation users of seeds 1 and 2 the extra steps cost .214 -> .159
        and .228 -> .173 (fine-tuning on 7 users then drifts from the window's history), and on
        test users over three seeds NYC fell from .223 to .188 while Gowalla rose from .160 to
        .233 and YJMob100K A stayed level (docs/results.rst). Set ``finetune_batch_size=None``
        to fine-tune in ``batch_size`` batches.

        The parts named by ``finetune_frozen`` (default: the location tower, which computes the
        candidates from the cells' features) stay as ``fit`` left them; a ``partial_fit`` on an
        unfitted model trains every weight. Measured on the same validation users at 8 windows a
        batch (Acc@1, NYC seeds 0 / 1 / 2, Gowalla Bay Area seeds 0 / 1 / 2, YJMob100K A seed 0):
        every weight .327 / .159 / .173, .254 / .186 / .242, .251; tower kept .325 / .202 / .231,
        .234 / .160 / .236, .249 (64 windows a batch, every weight: .327 / .214 / .228, .080 /
        .126 / .165, .248). Kept fixed, the tower no longer moves the candidates of the cells the
        few users visited, which cost the other users' returns on NYC; Gowalla loses a little.
        ``finetune_frozen=()`` fine-tunes every weight, as the paper does.

        References
        ----------
        docs/method.rst, "Training protocol" (transfer: one epoch on 1-10 % of the target city).
        """
        first = not hasattr(self, "net_")
        X = self._fit_encoder(X, pois, partial=not first)
        train, _ = self._training_windows(X, holdout=False)
        with self._seeded(0 if first else len(self.net_.history)), \
                _frozen(None if first else self.net_, self.finetune_frozen) as freezing:
            if first:
                self.net_ = self._new_net(None, schedule=False)
                self.net_.initialize()
                _check_frozen(self.net_.module_, self.finetune_frozen)     # for the calls to come
                self.net_.set_params(batch_size=self._finetune_batch_size())
            else:
                # windows in memory, whatever fit read (a net pre-trained on a window store
                # iterates its Parquet files): the in-memory loader of the net's batch format
                # (assigned: skorch's set_params does not take a new iterator class)
                loader = ShardedCityBatchLoader if isinstance(self.net_, DistributedNeuralNet) else CityBatchLoader
                self.net_.iterator_train = self.net_.iterator_valid = loader
                self.net_.set_params(train_split=None, callbacks=freezing + self._callbacks(validate=False, schedule=False),
                                     lr=self._finetune_lr(), batch_size=self._finetune_batch_size(),
                                     verbose=self.verbose if is_main_process() else 0)
                self.net_.initialize_callbacks()
            self._register_cities()
            if not first and self.verbose and is_main_process():
                print(f"fine-tuning: {len(train)} windows, {self.finetune_epochs} epoch(s) at lr "
                      f"{self.net_.lr:.3g}, {self.net_.batch_size} windows a batch; epochs count on from fit's, "
                      "and the loss ranks each city's own cells, so it does not compare with fit's")
            self.net_.partial_fit(WindowDataset(train), epochs=self.finetune_epochs)
        return self

    def _finetune_batch_size(self):
        """Windows per batch of ``partial_fit``: ``finetune_batch_size``, else ``batch_size``."""
        return self.batch_size if self.finetune_batch_size is None else self.finetune_batch_size

    def _finetune_lr(self):
        """Learning rate of a ``partial_fit`` after ``fit``: ``finetune_lr``; else ``lr`` when
        ``set_params`` changed it after fit; else the rate ``fit`` ended with."""
        if self.finetune_lr is not None:
            return self.finetune_lr
        if getattr(self, "_fit_lr", self.lr) != self.lr:
            return self.lr
        return getattr(self, "final_lr_", self.lr)

    @contextlib.contextmanager
    def _seeded(self, offset):
        """Seed torch from ``random_state`` (+ offset: epochs trained so far) without
        touching the caller's global random state."""
        seed = self._seed(offset)
        if seed is None:
            yield
            return
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
            torch.manual_seed(seed)
            yield

    # -------------------------------------------------------------- inference
    def _learned_weight(self):
        """Weight of the learned terms when cells are scored (1 here; see TrajMoERegressor)."""
        return 1.0

    _caches = ("_kept_state",)

    def _kept(self, key, compute):
        """``compute()``, kept across calls while the network and its city tables are unchanged.

        What inference computes of a city whatever the tokens (the location tower's candidate
        matrix, its feature tables, the tiles of the tile search) is computed on a city's first
        scoring call and reused by the next calls, instead of once a call: on YJMob100K city A
        (43,264 cells) the tower takes about as long as scoring 1,000 targets.

        What is kept belongs to one state of the network: every parameter and buffer (the tensor
        object and its version counter, which every in-place update bumps: the steps of the
        estimators' AdamW, ``load_state_dict``, an edit under ``torch.no_grad``), every submodule
        (a replaced one), the encoder and the autocast state. A change of any drops it all;
        ``fit`` and ``partial_fit`` drop it too, and pickling leaves it out; a network holding
        inference tensors (loaded under ``torch.inference_mode``), which have no version counter,
        keeps nothing beyond a call. Not seen: edits that bypass version counters (through
        ``tensor.data``, or the steps of a ``fused=True`` optimizer run outside ``fit``), hooks
        added to the network and its plain attributes set (``poi_transform``): score a copy
        (``copy.deepcopy``) after those.
        """
        values = self._memo("kept", self._kept_values)          # the state checked once a call
        if key not in values:
            values[key] = compute()
        return values[key]

    def _kept_values(self):
        """The values :meth:`_kept` holds for the network's current state (emptied if it changed)."""
        module = self.net_.module_
        tensors = [*module.parameters(), *module.buffers()]
        if any(t.is_inference() for t in tensors):
            # an inference tensor (a model unpickled under torch.inference_mode) has no version
            # counter: its in-place changes cannot be seen, so nothing is kept beyond this call
            self.__dict__.pop("_kept_state", None)
            return {}
        modules = list(module.modules())
        device = torch.device(self.net_.device).type
        state = (id(self.encoder_), tuple(map(id, modules)), _autocast_state(device),
                 tuple((id(t), t._version) for t in tensors))
        kept = self.__dict__.get("_kept_state")
        if kept is None or kept["state"] != state:
            # the objects whose ids the state holds are held too: no other object takes their id
            kept = self.__dict__["_kept_state"] = {"state": state, "objects": (self.encoder_, modules, tensors),
                                                   "values": {}}
        return kept["values"]

    def _forward(self, batch, city, learned_weight=1.0):
        module = self.net_.module_
        if any(m.training for m in module.modules()):      # eval() sets every module's flag: not per batch
            module.eval()
        device = self.net_.device
        index = self.cities_.index(city)
        inputs = {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
        inputs["city"] = torch.full((batch["location"].shape[0],), index, dtype=torch.long, device=device)
        # inference mode: no autograd bookkeeping at all (version counters, views); the outputs are
        # only ever scored, never trained on
        with torch.inference_mode():
            # candidates and feature tables: once per city while the network is unchanged (_kept), not
            # per batch or per call
            encoding = self._kept(("city_encoding", index), lambda: module.city_encoding(index))
            return module(**inputs, city_encoding=encoding, learned_weight=learned_weight)

    #: Valid tokens of consecutive batches of one city ranked together by the tile search
    #: (:meth:`_rank_batches`): a tile is then scored once for all of them instead of once a
    #: batch. What they hold is a few vectors a token (query, distance buckets, window cells).
    _search_group_tokens = 16384

    def _rank_batches(self, batches, k, truth, values):
        # the tokens of consecutive batches of one city that the tile search ranks are gathered
        # (SearchTokens) and ranked at once, up to _search_group_tokens: the network runs a batch
        # at a time, the tiles are visited once a group; the other batches score every cell
        # (_dense_rank). Neural estimators rank here, not in _batch_rank.
        group, learned_weight = [], self._learned_weight()

        def ranked():
            c, tiles = group[0][0], group[0][3]
            rows = np.concatenate([g[1] for g in group])
            found = rank_tokens(SearchTokens.concat([g[2] for g in group]), tiles, k,
                                None if truth is None else truth[rows], block=_scoring.SCORE_BLOCK)
            group.clear()
            return (c, rows, *found)

        for c, rows, batch in batches:
            out = self._forward(batch, self.cities_[c], learned_weight)
            tiles = self._search_tiles(out, self.cities_[c], k, values)
            if group and (tiles is None or c != group[0][0]
                          or sum(len(g[1]) for g in group) + len(rows) > self._search_group_tokens):
                yield ranked()
            if tiles is None:
                yield (c, rows, *self._dense_rank(out, batch, k, None if truth is None else truth[rows], values))
            else:
                group.append((c, rows, SearchTokens.of(out, *self._valid_tokens(batch)), tiles))
        if group:
            yield ranked()

    def _valid_tokens(self, batch):
        """Batch index and position (LongTensors on the network's device) of a batch's valid tokens,
        in row-major order."""
        rows, cols = torch.nonzero(torch.as_tensor(batch["location"]) != PAD, as_tuple=True)
        device = self.net_.device
        return rows.to(device), cols.to(device)

    def _search_tiles(self, out, city, k, values):
        """The city's :class:`CellTiles` where the tile search ranks ``out`` (labels or ranks
        alone, on a CPU, a searchable output with finite city terms), else None."""
        if (k is not None and values) or out["query"].device.type != "cpu" or not searchable(out):
            # a GPU scores every cell faster than it visits tiles one by one
            return None
        index = self.cities_.index(city)
        side = TILE_CELLS * self.encoder_.cities_[city].grid.cell_size
        tiles = self._kept(("tiles", index), lambda: CellTiles(out["candidates"], out["candidate_bias"],
                                                               out["cell_metres"], side))
        return tiles if tiles.finite else None

    def _dense_rank(self, out, batch, k, truth, values):
        """``(ids, values, ranks)`` of the valid tokens of a batch (as :meth:`_batch_rank` returns
        them) from its network output ``out``, by scoring every cell."""
        device = self.net_.device
        location = torch.as_tensor(batch["location"])
        rows, cols = torch.nonzero(location != PAD, as_tuple=True)
        # tokens in the order of their current cell: a score block then holds few distinct current
        # cells, whose distance buckets it computes once each (add_distance_prior)
        order = torch.argsort(location[rows, cols], stable=True).numpy()
        rows, cols = rows[order].to(device), cols[order].to(device)

        # every ranking orders ranking_scores (without the copy path the logits: log-probabilities
        # less one log-sum-exp a row); the scores of the top k become log-probabilities by that
        # shift, computed only where they are read
        shift = np.zeros(len(rows)) if values and k is not None and out.get("copy_scores") is None else None

        def score_rows(index):
            at = torch.as_tensor(index, device=device)
            with torch.inference_mode():
                scores = ranking_scores(out, rows[at], cols[at]).float()
                if shift is not None:
                    shift[index] = torch.logsumexp(scores, dim=1).cpu().numpy()
            return scores

        # a block of tokens at a time (SCORE_BLOCK scores): memory independent of the batch
        ids, top, ranks = rank_blocks(score_rows, len(rows), out["candidates"].shape[0], k,
                                      None if truth is None else truth[order], block=_scoring.SCORE_BLOCK)
        if shift is not None:
            top -= shift[:, None]
        back = np.argsort(order)                  # results in the batch's token order again
        return tuple(None if result is None else result[back] for result in (ids, top, ranks))

    def _batch_scores(self, batch, city):
        out = self._forward(batch, city, self._learned_weight())
        rows, cols = torch.nonzero(torch.as_tensor(batch["location"]) != PAD, as_tuple=True)
        rows, cols = rows.to(self.net_.device), cols.to(self.net_.device)
        # a few million scores at a time: the distance prior's temporaries are as large as the scores
        step = max(1, _scoring.SCORE_BLOCK // max(out["candidates"].shape[0], 1))
        if not len(rows):
            return np.zeros((0, out["candidates"].shape[0]), np.float32)
        with torch.inference_mode():
            return torch.cat([location_log_probs(out, rows[i:i + step], cols[i:i + step]).float().cpu()
                              for i in range(0, len(rows), step)]).numpy()

    def _per_visit(self, X, key):
        """Network output ``key`` ("query" or "time_logits") at every visit, in X's order."""
        X = self._visits_of(X)
        with self._unseen_cells(X):
            return self._per_visit_fitted(X, key)

    def _per_visit_fitted(self, X, key):
        prep, windows = self._visit_windows(X)
        out = None
        with self._scoring_call():
            for c, b, width, batch, valid in self._iter_batches(windows):
                values = self._forward(batch, self.cities_[c])[key].float().cpu().numpy()
                if out is None:
                    out = np.zeros((prep.n_rows, values.shape[-1]), np.float32)
                out[prep.order[windows.row[b, :width][valid]]] = values[valid]
        return out if out is None else prep.per_row(out)

    def transform(self, X):
        """Query vectors (final hidden states) after every visit.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame (or a fitted encoder's output carrying it).

        Returns
        -------
        ndarray of float32, shape (n_visits, d_model)
            The query each visit's next-location ranking uses (dot product with the
            city's location embeddings, :meth:`location_embeddings`); a DataFrame with the
            columns of :meth:`get_feature_names_out` under ``set_output(transform="pandas")``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        """
        return self._per_visit(X, "query")

    def get_feature_names_out(self, input_features=None):
        """Names of the columns of :meth:`transform`: ``query0`` .. ``query<d_model - 1>``.

        Parameters
        ----------
        input_features : None
            Ignored (the queries do not derive from columns).

        Returns
        -------
        ndarray of object (str), shape (d_model,)

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        """
        check_is_fitted(self, "net_")
        return np.array([f"query{i}" for i in range(self.net_.module_.d_model)], dtype=object)

    def predict_time(self, X):
        """Time until the next visit after every visit, from the time head.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)

        Returns
        -------
        ndarray of int64, shape (n_visits,)
            Most likely gap in minutes, at half-hour resolution (0, 30, ..., 2850; the
            last class means 47.5 hours or more).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.

        References
        ----------
        docs/method.rst, "The SAMoE network" (time head: Linear(d, 96) over half-hour gaps).
        """
        return self._per_visit(X, "time_logits").argmax(axis=1).astype(np.int64) * 30

    @property
    def history_(self):
        """Loss per epoch of every training call so far (``fit``, then each ``partial_fit``).

        Returns
        -------
        DataFrame of shape (n_epochs, 7)
            ``epoch`` (int, counting on across calls), ``train_loss`` and ``valid_loss``
            (float; NaN where no users were held out, as in ``partial_fit``), ``valid_acc1`` and
            ``valid_mrr`` (Acc@1 and MRR of the held-out users' targets, full ranking, ties
            pessimistic; NaN where none were held out), ``lr`` (the learning rate the epoch trained
            with; NaN where no scheduler ran, as in ``partial_fit``) and ``dur`` (seconds), from
            skorch's history (``net_.history``).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        """
        check_is_fitted(self, "net_")
        columns = ["epoch", "train_loss", "valid_loss", "valid_acc1", "valid_mrr", "lr", "dur"]
        rows = [{"epoch": int(h.get("epoch", i + 1)), **{c: h.get(c, np.nan) for c in columns[1:-2]},
                 "lr": h.get("event_lr", np.nan), "dur": h.get("dur", np.nan)}
                for i, h in enumerate(self.net_.history)]
        return pd.DataFrame(rows, columns=columns)

    def location_embeddings(self, city):
        """Candidate embeddings of a city's cells (location tower output).

        Parameters
        ----------
        city : str

        Returns
        -------
        ndarray of float32, shape (n_locations, d_model)
            Row i = location id i of :meth:`SpatialSemanticEncoder.location_table`.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit`` (or ``partial_fit``).
        trajmoe.exceptions.UnknownCityError
            If the model has not registered ``city``.
        """
        check_is_fitted(self, "net_")
        if city not in self.cities_:
            raise UnknownCityError(f"Unknown city {city!r}; known cities: {self.cities_}.")
        batch = {k: np.zeros((1, 1), np.int64) for k in TOKEN_FEATURES}
        batch["dow"][:] = 1
        # under the scoring lock: another thread's call may have swapped in extended city tables
        with scoring_lock(self):
            # a copy: the candidates are kept for the next scoring call (_kept), the caller may write to it
            return self._forward(batch, city)["candidates"].cpu().numpy().copy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def store_net_params(estimator, params):
    """Store the keyword arguments routed to the skorch net (the ``**kwargs`` of an ``__init__``).

    As every parameter, they are stored as given and checked in ``fit``: a name without a prefix
    of :data:`NET_PREFIXES` (a typo, or ``train_split``) raises there.

    Parameters
    ----------
    estimator : NeuralNextLocationEstimator
    params : dict of str -> object
        ``<prefix>__<name>`` arguments, stored as attributes.
    """
    for key, value in params.items():
        setattr(estimator, key, value)


class _FrozenNet:
    """A copy of a skorch net kept as the state it pickles to (its module, optimizer and
    criterion as bytes in host memory); :meth:`thaw` makes the net again, on its device."""

    def __init__(self, net):
        self.cls = type(net)
        self.state = copy.deepcopy(net.__getstate__())

    def thaw(self):
        net = object.__new__(self.cls)
        net.__setstate__(self.state)
        return net


def _validation_monitor(callback):
    """The validation score (``valid_...``) a callback acts on (its ``monitor``; a scheduler's
    policy argument too), or None."""
    monitors = [getattr(callback, "monitor", None), getattr(callback, "kwargs", {}).get("monitor")]
    return next((m for m in monitors if isinstance(m, str) and m.startswith("valid_")), None)


def _callback_name(entry):
    """Name of an entry of ``callbacks=``: the name of a (name, callback) pair, else the class name."""
    return entry[0] if isinstance(entry, tuple) else type(entry).__name__


def _callback_of(entry):
    """The callback of an entry of ``callbacks=``: of a (name, callback) pair, else the entry."""
    return entry[1] if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str) else entry


def _callback_names(entries):
    """Names of the entries of ``callbacks=``, as skorch names them: the given name of a pair,
    else the class name, numbered ``_1``, ``_2``, ... where a class comes more than once."""
    names = [_callback_name(entry) for entry in entries]
    unnamed = [type(entry).__name__ for entry in entries if not isinstance(entry, tuple)]
    counts, seen = {n: unnamed.count(n) for n in unnamed}, {}
    out = []
    for entry, name in zip(entries, names):
        if not isinstance(entry, tuple) and counts[name] > 1:
            seen[name] = seen.get(name, 0) + 1
            name = f"{name}_{seen[name]}"
        out.append(name)
    return out


def _in_notebook():
    """Whether the code runs in a Jupyter kernel (IPython's ZMQ shell)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def check_device(device):
    """Raise an ``InvalidParameterError`` unless ``device`` is ``"auto"`` or a device torch has here.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<index>"``, ``"mps"``, ...

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        A ValueError and a TypeError, as scikit-learn's parameter checks raise: if torch does
        not know the device (``"gpu"``), or this machine does not have it (``"cuda"`` without a
        CUDA GPU), saying what to use instead.
    """
    if isinstance(device, str) and device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidParameterError(f"device={device!r} is not a torch device: use 'auto' (CUDA when present, "
                                    "else the CPU), 'cpu', 'cuda', 'cuda:<index>' or 'mps'.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
            raise InvalidParameterError(f"device={device!r}, but torch has no CUDA device here (torch "
                                        f"{torch.__version__}, {build}): use device='auto' (CUDA when present, "
                                        "else the CPU) or 'cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidParameterError(f"device={device!r}, but torch sees {torch.cuda.device_count()} CUDA "
                                        f"device(s) here (indices 0..{torch.cuda.device_count() - 1}).")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameterError(f"device={device!r}, but torch has no MPS device here: use device='auto' "
                                    "or 'cpu'.")


def _every_epoch(net) -> bool:
    """``at`` of the freezing callback: apply at the start of every epoch."""
    return True


def _in_parts(parts, name) -> bool:
    """Whether parameter ``name`` belongs to one of the network parts ``parts``."""
    return any(name == part or name.startswith(part + ".") for part in parts)


def _check_frozen(module, parts) -> None:
    """Check ``finetune_frozen`` against the parts of ``module``.

    Raises
    ------
    ValueError
        If a name is not a part of the network (a child module or a parameter of its own), or
        if the parts hold every weight (nothing would be fine-tuned).
    """
    names = [n for n, _ in module.named_children()] + [n for n, _ in module.named_parameters(recurse=False)]
    unknown = [part for part in parts if not isinstance(part, str) or part not in names]
    if unknown:
        raise ValueError(f"finetune_frozen names {unknown!r}, which are not parts of this network; "
                         f"its parts are {sorted(names)} (e.g. finetune_frozen=('tower',), or () to fine-tune every weight)")
    if all(_in_parts(tuple(parts), name) for name, _ in module.named_parameters()):
        raise ValueError(f"finetune_frozen={tuple(parts)!r} keeps every weight of the network fixed: partial_fit "
                         "would train nothing. Leave out the parts to fine-tune (e.g. finetune_frozen=('tower',)).")


@contextlib.contextmanager
def _kept(module, parts):
    """Keep the parameters of the network parts ``parts`` as they are while training inside the
    block (no gradient, so the optimizer skips them); trainable again afterwards."""
    kept = [p for name, p in module.named_parameters() if _in_parts(tuple(parts), name)]
    for parameter in kept:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in kept:
            parameter.requires_grad_(True)


@contextlib.contextmanager
def _frozen(net, parts):
    """Keep the network parts ``parts`` fixed while training ``net`` inside the block: skorch's
    :class:`~skorch.callbacks.Freezer` at every epoch, every weight trainable again afterwards.

    Yields
    ------
    list of (str, Callback)
        The callbacks to add to the training call (none where ``net`` is None: a network
        initialised by this call trains every weight).

    Raises
    ------
    ValueError
        As :func:`_check_frozen`.
    """
    if net is None:
        yield []
        return
    module = net.module_
    _check_frozen(module, parts)
    try:
        yield [("finetune_frozen", Freezer(functools.partial(_in_parts, tuple(parts)), at=_every_epoch))]
    finally:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
