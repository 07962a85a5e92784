"""What trajmoe's neural next-location estimators share: skorch training and inference.

Rows of the frames are visits, not samples, so the estimators compose a skorch
:class:`~skorch.NeuralNet` (``net_``) rather than inheriting from one: they build windows of
tokens, hand them to skorch's training loop as a dataset of single-city batches, and use
skorch's callbacks for early stopping, the learning-rate schedule, gradient clipping and
progress bars. A subclass names its network (:attr:`NeuralNextLocationEstimator._network`, a
:class:`trajmoe.nn.RetrievalNetwork`) and its network parameters
(:meth:`NeuralNextLocationEstimator._module_params`).
"""

from __future__ import annotations

import contextlib
import numbers
import sys

import numpy as np
import pandas as pd
import torch
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping, GradientNormClipping, LRScheduler, ProgressBar
from skorch.helper import predefined_split
from sklearn.utils.validation import check_is_fitted
from torch.optim.lr_scheduler import MultiStepLR

from .base import NextLocationEstimator
from .nn import TrajMoELoss, location_log_probs
from .nn.retrieval import COORD_ENCODINGS
from .nn.samoe import N_SPECIALISTS
from .sequences import PAD, CityBatchLoader, WindowDataset

__all__ = ["NeuralNextLocationEstimator", "adamw_matrices_decay"]

#: Scores (positions x cells) computed at once at inference.
_SCORE_CHUNK = 4_000_000


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
    MODEL.md section 4.
    """
    params = [q for p in params for q in (p["params"] if isinstance(p, dict) else [p]) if q.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, foreach=True)


class NeuralNextLocationEstimator(NextLocationEstimator):
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
        Learning rate at the end of ``fit`` (the default of ``partial_fit``).
    """

    #: The network class (a :class:`trajmoe.nn.RetrievalNetwork`); set by subclasses.
    _network = None
    #: Whether None sizes (d_model, n_layers, n_heads) mean "the preset's".
    _preset_sizes = False

    # ----------------------------------------------------------------- building
    def _check_params(self):
        super()._check_params()
        sizes = ("d_model", "n_layers", "n_heads")
        for name in ("max_epochs", "batch_size", *sizes, "finetune_epochs", "stride_days", "patience"):
            if not hasattr(self, name):
                continue
            value = getattr(self, name)
            if value is None and name in sizes and self._preset_sizes:
                continue    # None: the preset's size
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        for name in ("lr", "weight_decay", "time_weight", "finetune_lr", "clip_grad"):
            value = getattr(self, name)
            if value is None and name in ("finetune_lr", "clip_grad"):
                continue
            if not _is_number(value) or not np.isfinite(value) or value < 0 or (name == "clip_grad" and value == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if name == 'clip_grad' else '>= 0'}"
                                 f"{' or None' if name in ('finetune_lr', 'clip_grad') else ''}, got {value!r}.")
        if not _is_number(self.validation_fraction) or not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be a number in [0, 1), got {self.validation_fraction!r}.")
        for name in ("experts", "shared_expert", "shared_gate", "copy_path", "copy_successor", "time_in_trajectory",
                     "distance_prior", "cell_embedding", "location_ids", "history_prior"):
            if hasattr(self, name) and not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if getattr(self, "coord_encoding", "linear") not in COORD_ENCODINGS:
            raise ValueError(f"coord_encoding must be one of {COORD_ENCODINGS}, got {self.coord_encoding!r}.")
        top_k = getattr(self, "top_k", None)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral)
                                  or not 1 <= top_k <= N_SPECIALISTS):
            raise ValueError(f"top_k must be None or an int in 1..{N_SPECIALISTS} (of the specialist experts), "
                             f"got {top_k!r}.")

    def _module_params(self):
        """Keyword arguments of the network, prefixed ``module__`` (skorch)."""
        raise NotImplementedError

    def _device(self):
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def _callbacks(self, validate):
        callbacks = []
        if validate:
            callbacks.append(("early_stopping", EarlyStopping(monitor="valid_loss", patience=self.patience,
                                                              load_best=True)))
        if validate and self.max_epochs >= 3:
            milestones = sorted({max(1, int(f * self.max_epochs)) for f in (0.4, 0.6, 0.9)})
            callbacks.append(("lr_scheduler", LRScheduler(MultiStepLR, milestones=milestones, gamma=0.4)))
        if self.clip_grad:
            callbacks.append(("clip", GradientNormClipping(self.clip_grad)))
        if self.verbose and sys.stderr.isatty():
            callbacks.append(("progress", ProgressBar()))
        return callbacks

    def _new_net(self, valid_dataset):
        seed = None if self.random_state is None else int(self.random_state)
        return NeuralNet(
            module=self._network, **self._module_params(),
            criterion=TrajMoELoss, criterion__time_weight=self.time_weight,
            optimizer=adamw_matrices_decay, optimizer__weight_decay=self.weight_decay, lr=self.lr,
            batch_size=self.batch_size, max_epochs=self.max_epochs,
            iterator_train=CityBatchLoader, iterator_train__shuffle=True, iterator_train__random_state=seed,
            iterator_valid=CityBatchLoader,
            train_split=predefined_split(valid_dataset) if valid_dataset is not None else None,
            callbacks=self._callbacks(valid_dataset is not None), device=self._device(),
            verbose=self.verbose)

    def _vocabulary_changed(self):
        self._register_cities(learned=False)

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

    def _training_windows(self, X, holdout):
        """Sliding training windows of X; with holdout, also non-overlapping validation
        windows of a share of each city's users."""
        prep = self._prepare(X)
        val_users = self._held_out_users(prep) if holdout and self.validation_fraction else np.zeros(0, np.int64)
        train = self._windows(prep, stride_days=self.stride_days, min_stays=self.min_stays)
        in_val = np.isin(prep.user_key[np.maximum(train.row[:, 0], 0)], val_users)
        valid = None
        if in_val.any():
            valid = self._windows(prep, min_stays=self.min_stays)
            valid = valid.subset(np.isin(prep.user_key[np.maximum(valid.row[:, 0], 0)], val_users))
            train = train.subset(~in_val)
            if not len(valid):
                valid = None
        if not len(train):
            raise ValueError(
                f"No training window: every user needs at least min_stays={self.min_stays} visits within "
                f"window_days={self.window_days} days. Lower min_stays or raise window_days.")
        return train, valid

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
            If no window has ``min_stays`` visits, or a parameter is invalid.
        """
        self._fit_encoder(X, pois, partial=False)
        train, valid = self._training_windows(X, holdout=True)
        with self._seeded(0):
            self.net_ = self._new_net(WindowDataset(valid) if valid is not None else None)
            self.net_.initialize()
            self._register_cities()
            self.net_.partial_fit(WindowDataset(train), epochs=self.max_epochs)
        self.final_lr_ = float(self.net_.optimizer_.param_groups[0]["lr"])
        return self

    def partial_fit(self, X, y=None, pois=None):
        """Fine-tune all weights for ``finetune_epochs`` epochs (default ONE) on X.

        Cities of X that the model does not know are registered on the fly (their
        location features come from X and ``pois``); known cities gain X's cells and
        visit counts. No data is held out and no early stopping applies. On an unfitted
        model, this initialises the network and trains ``finetune_epochs`` epochs.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
        y : None
            Ignored.
        pois : DataFrame, optional

        Returns
        -------
        self

        Notes
        -----
        The learning rate is ``finetune_lr``, by default the one ``fit`` ended with (after
        its step decay): restarting from the initial rate on a few users' windows undid
        what pre-training taught (measured on validation users of Foursquare NYC: Acc@1
        .22-.27 after one epoch on 5 % at lr 1e-3, against .28-.29 at the final 1.6e-4).

        References
        ----------
        MODEL.md section 4 (transfer: one epoch on 1-10 % of the target city).
        """
        first = not hasattr(self, "net_")
        self._fit_encoder(X, pois, partial=not first)
        train, _ = self._training_windows(X, holdout=False)
        with self._seeded(0 if first else len(self.net_.history)):
            if first:
                self.net_ = self._new_net(None)
                self.net_.initialize()
            else:
                lr = self.finetune_lr if self.finetune_lr is not None else getattr(self, "final_lr_", self.lr)
                self.net_.set_params(train_split=None, callbacks=self._callbacks(validate=False), lr=lr)
                self.net_.initialize_callbacks()
            self._register_cities()
            self.net_.partial_fit(WindowDataset(train), epochs=self.finetune_epochs)
        return self

    @contextlib.contextmanager
    def _seeded(self, offset):
        """Seed torch from ``random_state`` (+ offset: epochs trained so far) without
        touching the caller's global random state."""
        if self.random_state is None:
            yield
            return
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
            torch.manual_seed(int(self.random_state) + int(offset))
            yield

    # -------------------------------------------------------------- inference
    def _forward(self, batch, city):
        module = self.net_.module_
        module.eval()
        device = self.net_.device
        index = self.cities_.index(city)
        inputs = {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
        inputs["city"] = torch.full((batch["location"].shape[0],), index, dtype=torch.long, device=device)
        with torch.no_grad():
            return module(**inputs)

    def _batch_scores(self, batch, city):
        out = self._forward(batch, city)
        rows, cols = torch.nonzero(torch.as_tensor(batch["location"]) != PAD, as_tuple=True)
        rows, cols = rows.to(self.net_.device), cols.to(self.net_.device)
        # a few million scores at a time: the distance prior's temporaries are as large as the scores
        step = max(1, _SCORE_CHUNK // max(out["candidates"].shape[0], 1))
        with torch.no_grad():
            return torch.cat([location_log_probs(out, rows[i:i + step], cols[i:i + step]).float().cpu()
                              for i in range(0, len(rows), step)]) if len(rows) else \
                torch.zeros((0, out["candidates"].shape[0]))

    def _per_visit(self, X, key):
        """Network output ``key`` ("query" or "time_logits") at every visit, in X's order."""
        with self._unseen_cells(X):
            return self._per_visit_fitted(X, key)

    def _per_visit_fitted(self, X, key):
        prep, windows = self._visit_windows(X)
        out = None
        for c, b, width, batch, valid in self._iter_batches(windows):
            values = self._forward(batch, self.cities_[c])[key].float().cpu().numpy()
            if out is None:
                out = np.zeros((len(prep.order), values.shape[-1]), np.float32)
            out[prep.order[windows.row[b, :width][valid]]] = values[valid]
        return out

    def transform(self, X):
        """Query vectors (final hidden states) after every visit.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)

        Returns
        -------
        ndarray of float32, shape (n_visits, d_model)
            The query each visit's next-location ranking uses (dot product with the
            city's location embeddings, :meth:`location_embeddings`).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        """
        return self._per_visit(X, "query")

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
        MODEL.md section 3 (time head: Linear(d, 96) over half-hour gaps).
        """
        return self._per_visit(X, "time_logits").argmax(axis=1).astype(np.int64) * 30

    @property
    def history_(self):
        """Loss per epoch of every training call so far (``fit``, then each ``partial_fit``).

        Returns
        -------
        DataFrame of shape (n_epochs, 5)
            ``epoch`` (int, counting on across calls), ``train_loss`` and ``valid_loss``
            (float; NaN where no users were held out, as in ``partial_fit``), ``lr`` (the
            learning rate at the end of the epoch, NaN if not recorded) and ``dur``
            (seconds), from skorch's history (``net_.history``).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        """
        check_is_fitted(self, "net_")
        rows = [{"epoch": int(h.get("epoch", i + 1)), "train_loss": h.get("train_loss", np.nan),
                 "valid_loss": h.get("valid_loss", np.nan), "lr": h.get("event_lr", np.nan), "dur": h.get("dur", np.nan)}
                for i, h in enumerate(self.net_.history)]
        return pd.DataFrame(rows, columns=["epoch", "train_loss", "valid_loss", "lr", "dur"])

    def location_embeddings(self, city):
        """Candidate embeddings of a city's cells (location tower output).

        Parameters
        ----------
        city : str

        Returns
        -------
        ndarray of float32, shape (n_locations, d_model)
            Row i = location id i of :meth:`SpatialSemanticEncoder.location_table`.
        """
        check_is_fitted(self, "net_")
        if city not in self.cities_:
            raise ValueError(f"Unknown city {city!r}; known cities: {self.cities_}.")
        batch = {k: np.zeros((1, 1), np.int64) for k in ("location", "slot", "dow", "gap")}
        batch["dow"][:] = 1
        return self._forward(batch, city)["candidates"].cpu().numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)

