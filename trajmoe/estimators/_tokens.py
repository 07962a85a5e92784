"""The array-level core: trajmoe's sequence networks over integer token matrices.

The visit-frame estimators turn visits into windows of location tokens and hand them to a
network (:mod:`trajmoe.estimators._neural`). :class:`NextTokenClassifier` exposes that layer as a
plain scikit-learn classifier over 2-D arrays: every row is a sequence of tokens (location ids,
oldest first), the target is the token that comes next. It trains the networks of
:class:`~trajmoe.estimators.LSTMRegressor` and :class:`~trajmoe.estimators.TransformerRegressor`
(with location ID embeddings) with the same loss, optimizer, callbacks and skorch loop, and passes
scikit-learn's full estimator checks.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._constants import IGNORE_INDEX, TOKEN_FEATURES
from ..nn import location_log_probs
from ..nn.data import WindowDataset
from ..sequences import Windows
from ._recurrent import LSTMRegressor, TransformerRegressor

__all__ = ["NextTokenClassifier"]

#: Sequences scored at once at inference.
_PREDICT_BATCH = 256
_NETWORKS = {"lstm": LSTMRegressor, "transformer": TransformerRegressor}


class NextTokenClassifier(ClassifierMixin, BaseEstimator):
    """Next token of integer token sequences, by one of trajmoe's sequence networks.

    The array-level core of the library: ``X[i]`` is a sequence of tokens (location ids, oldest
    first; any numbers: every distinct value is a token), ``y[i]`` the token that comes next (the
    class). Tokens and classes share one vocabulary (a token equal to a class is that class's
    location), embedded by learned ID embeddings; the network reads the sequence causally and
    ranks the classes by the dot product of its query at the last position with their output
    embeddings (the retrieval head of every trajmoe network). A token not seen in fit is the
    out-of-vocabulary token.

    Parameters
    ----------
    network : {"lstm", "transformer"}, default "lstm"
        The sequence encoder: :class:`trajmoe.nn.LSTMNetwork` or
        :class:`trajmoe.nn.TransformerNetwork`.
    d_model : int, default 32
        Width (divisible by 4, and by ``n_heads`` for the transformer).
    n_layers : int, default 1
    n_heads : int, default 2
        Attention heads (transformer only).
    dropout : float in [0, 1), default 0.0
    lr : float, default 0.01
        AdamW learning rate (decayed by 0.4 at 40, 60 and 90 % of the epochs).
    weight_decay : float, default 0.0
        On matrices only.
    batch_size : int, default 32
        Sequences per batch.
    max_epochs : int, default 20
    clip_grad : float or None, default 1.0
        Gradient norm clipping.
    device : str or torch.device, default "auto"
        "auto" uses CUDA when available.
    random_state : int, RandomState instance or None, default None
        Seeds weights and batch order (CPU runs repeat exactly with an int).
    verbose : int, default 0

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The distinct targets, sorted.
    tokens_ : ndarray of shape (n_tokens,)
        The distinct values of X in fit that are not classes, sorted (token ids ``n_classes``
        onwards).
    n_features_in_ : int
        Sequence length.
    net_ : skorch.NeuralNet
        The trained network and its history.

    See Also
    --------
    trajmoe.estimators.LSTMRegressor : the same network over visit frames (windows built from
        the visits, location features, cities).

    Notes
    -----
    scikit-learn's estimator checks run in the test suite on this estimator, all of them
    (``tests/test_estimator_api.py``). Sequences are scored independently of each other, in
    float64 (the float32 weights, upcast), so that the probabilities of a sequence do not depend on
    the order or the company of the rows, even in the last bits.

    Examples
    --------
    >>> import numpy as np
    >>> from trajmoe.estimators import NextTokenClassifier
    >>> X = np.array([[1, 2, 3], [2, 3, 1], [3, 1, 2]] * 10)
    >>> y = np.array([1, 2, 3] * 10)                     # after ... 2, 3 comes 1, and so on
    >>> model = NextTokenClassifier(max_epochs=10, device="cpu", random_state=0).fit(X, y)
    >>> model.predict([[1, 2, 3], [3, 1, 2]]).tolist()
    [1, 3]
    """

    _parameter_constraints: dict = {
        "network": [StrOptions(set(_NETWORKS))],
        "d_model": [Interval(Integral, 4, None, closed="left")],
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "n_heads": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "clip_grad": [Interval(Real, 0, None, closed="neither"), None],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, network="lstm", d_model=32, n_layers=1, n_heads=2, dropout=0.0, lr=0.01,
                 weight_decay=0.0, batch_size=32, max_epochs=20, clip_grad=1.0, device="auto",
                 random_state=None, verbose=0):
        self.network = network
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.clip_grad = clip_grad
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _trainer(self):
        """The visit-frame estimator whose network, loss, optimizer and callbacks this trains."""
        params = dict(d_model=self.d_model, n_layers=self.n_layers, dropout=self.dropout, location_ids=True,
                      max_tokens=self.n_features_in_, lr=self.lr, weight_decay=self.weight_decay,
                      batch_size=self.batch_size, max_epochs=self.max_epochs, validation_fraction=0.0,
                      clip_grad=self.clip_grad, device=self.device, random_state=self.random_state,
                      verbose=self.verbose)
        if self.network == "transformer":
            params["n_heads"] = self.n_heads
        trainer = _NETWORKS[self.network](**params)
        trainer._check_params()
        return trainer

    def fit(self, X, y):
        """Train the network to predict ``y`` from the sequences ``X``.

        Parameters
        ----------
        X : array-like of shape (n_sequences, n_positions)
            Token sequences (numbers; every distinct value is a token).
        y : array-like of shape (n_sequences,)
            The next token of every sequence (class labels).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            On an invalid parameter, non-finite or non-numeric X, a continuous y, or X and y of
            different lengths. A failed fit leaves the estimator as it was (fitted or not).
        """
        fitted = dict(self.__dict__)
        try:
            return self._fit(X, y)
        except BaseException:
            self.__dict__.clear()            # the fitted attributes (and network) of before
            self.__dict__.update(fitted)
            raise

    def _fit(self, X, y):
        self._validate_params()
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.classes_, target = np.unique(y, return_inverse=True)
        values = np.unique(X)
        self.tokens_ = values[~self._is_class(values)]
        trainer = self._trainer()
        windows = self._windows(self._token_ids(X), target)
        with trainer._seeded(0):
            self.net_ = trainer._new_net(None)
            self.net_.initialize()
            n = len(self.classes_) + len(self.tokens_)
            self.net_.module_.register_city(0, torch.zeros(n, self.net_.module_.n_poi_features),
                                            torch.zeros(n, 2), torch.zeros(n, dtype=torch.long))
            self.net_.initialize_optimizer()
            self.net_.partial_fit(WindowDataset(windows), epochs=self.max_epochs)
        return self

    def _is_class(self, values):
        """Whether each value is one of ``classes_`` (False across numbers and strings)."""
        if values.dtype.kind not in "biuf" or self.classes_.dtype.kind not in "biuf":
            return np.zeros(len(values), bool)
        return np.isin(values, self.classes_)

    def _token_ids(self, X):
        """Token id of every value of X: its class index, ``n_classes`` + its index in ``tokens_``,
        or the out-of-vocabulary id (``n_classes + n_tokens``)."""
        n_classes, n_tokens = len(self.classes_), len(self.tokens_)
        ids = np.full(X.shape, n_classes + n_tokens, np.int64)
        if n_tokens:
            pos = np.minimum(np.searchsorted(self.tokens_, X), n_tokens - 1)
            found = self.tokens_[pos] == X
            ids[found] = n_classes + pos[found]
        is_class = self._is_class(X.ravel()).reshape(X.shape)
        if is_class.any():
            ids[is_class] = np.searchsorted(self.classes_, X[is_class])
        return ids

    @staticmethod
    def _windows(ids, target=None):
        """Windows of the token sequences (one per row); the target is that of the last position."""
        n, length = ids.shape
        zeros = np.zeros((n, length), np.int64)
        next_location = np.full((n, length), IGNORE_INDEX, np.int64)
        if target is not None:
            next_location[:, -1] = target
        return Windows(location=ids, slot=zeros, dow=np.ones((n, length), np.int64), gap=zeros,
                       next_location=next_location, next_gap=np.full((n, length), IGNORE_INDEX, np.int64),
                       city=np.zeros(n, np.int64), row=np.full((n, length), -1, np.int64),
                       target_row=np.full((n, length), -1, np.int64))

    def predict_proba(self, X):
        """Probability of every class as the next token of each sequence.

        Parameters
        ----------
        X : array-like of shape (n_sequences, ``n_features_in_``)

        Returns
        -------
        ndarray of float64, shape (n_sequences, n_classes)
            Rows sum to 1; columns follow ``classes_``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        ValueError
            If X has another number of positions than in fit, or non-finite values.
        """
        check_is_fitted(self, "net_")
        X = validate_data(self, X, reset=False)
        windows = self._windows(self._token_ids(X))
        # in float64: float32 matrix products depend, in the last bits, on the other rows of a batch
        module, device = copy.deepcopy(self.net_.module_).double().eval(), self.net_.device
        n_classes = len(self.classes_)
        out = np.zeros((len(X), n_classes))
        with torch.no_grad():
            for start in range(0, len(X), _PREDICT_BATCH):
                rows = slice(start, start + _PREDICT_BATCH)
                inputs = {k: torch.as_tensor(getattr(windows, k)[rows], device=device) for k in TOKEN_FEATURES}
                n = inputs["location"].shape[0]
                result = module(**inputs, city=torch.zeros(n, dtype=torch.long, device=device))
                last = torch.full((n,), X.shape[1] - 1, dtype=torch.long, device=device)
                log_probs = location_log_probs(result, torch.arange(n, device=device), last)[:, :n_classes]
                out[rows] = torch.softmax(log_probs, dim=1).cpu().numpy()
        return out

    def predict(self, X):
        """The most likely next token of each sequence.

        Parameters
        ----------
        X : array-like of shape (n_sequences, ``n_features_in_``)

        Returns
        -------
        ndarray of shape (n_sequences,)
            Labels of ``classes_`` (the first of tied best classes).
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False      # given an int random_state, on the CPU
        return tags
