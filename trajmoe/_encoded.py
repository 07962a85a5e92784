"""The output of :meth:`SpatialSemanticEncoder.transform`: location features that carry their visits.

A next-location model needs the visits themselves (user, time, place), not only the features of
their cells, so the encoder's output carries the visit frame it was computed from and the fitted
encoder. That is what makes the encoder a real pipeline step::

    make_pipeline(SpatialSemanticEncoder(), TrajMoERegressor())

The features keep scikit-learn's transformer contract (shape ``(n_visits, 37)``, the columns of
``get_feature_names_out``, ``set_output``), and a trajmoe estimator handed such an output reads
the carried visits and uses the carried encoder instead of fitting its own.

- Default output: :class:`EncodedArray`, a float64 ndarray subclass (``.visits``, ``.encoder``).
- ``set_output(transform="pandas")``: :class:`EncodedFrame`, a DataFrame subclass with the same
  two attributes, indexed like the visits.

A pickle of either keeps the visits and the encoder, so that a ``Pipeline(memory=...)`` cache,
which stores a step's output beside the fitted step, gives the model what it needs.

Only the object the encoder returns carries them: a slice, a copy or the result of any numpy or
pandas operation is a plain array or frame (carrying nothing), so a transformed or reordered
output can never be taken for the visits it came from. A polars output cannot carry them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["EncodedArray", "EncodedFrame", "encoded_output", "carried"]


class EncodedArray(np.ndarray):
    """Location features of visits, shape (n_visits, n_features), carrying the visits and encoder.

    Attributes
    ----------
    visits : DataFrame of shape (n_visits, n_columns) or None
        The visit frame the features were computed from (the caller's frame, not a copy).
    encoder : SpatialSemanticEncoder or None
        The fitted encoder that computed them.

    Notes
    -----
    Views, slices and results of numpy operations are plain arrays of this class whose
    ``visits`` and ``encoder`` are None. A pickle keeps both: pickled together with the encoder
    (as a ``Pipeline(memory=...)`` cache stores a step's output beside the fitted step), the
    output still carries that very encoder when loaded.
    """

    def __new__(cls, features, visits=None, encoder=None):
        out = np.asarray(features, dtype=np.float64).view(cls)
        out.visits = visits
        out.encoder = encoder
        return out

    def __array_finalize__(self, obj):
        # every array derived from this one carries nothing
        self.visits = None
        self.encoder = None

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # results of ufuncs are plain ndarrays
        out = np.asarray(array)
        return out[()] if return_scalar else out

    def __reduce__(self):
        return EncodedArray, (np.asarray(self), self.visits, self.encoder)


class EncodedFrame(pd.DataFrame):
    """Location features of visits as a DataFrame, carrying the visits and encoder.

    Columns are :meth:`SpatialSemanticEncoder.get_feature_names_out`, the index is the one of
    the visits. Attributes as :class:`EncodedArray`; any pandas operation on the frame returns
    a plain :class:`pandas.DataFrame` that carries nothing.
    """

    _metadata = ["visits", "encoder"]

    @property
    def _constructor(self):
        return pd.DataFrame

    def __reduce__(self):
        return _encoded_frame, (pd.DataFrame(self), self.visits, self.encoder)


def _encoded_frame(frame, visits, encoder):
    """An :class:`EncodedFrame` of ``frame`` carrying ``visits`` and ``encoder`` (unpickling)."""
    out = EncodedFrame(frame)
    out.visits = visits
    out.encoder = encoder
    return out


def encoded_output(features, visits, encoder, names, container):
    """Wrap features computed by ``encoder`` from ``visits`` in the carrier of an output container.

    Parameters
    ----------
    features : ndarray of float64, shape (n_visits, n_features)
    visits : DataFrame of shape (n_visits, n_columns)
    encoder : SpatialSemanticEncoder
    names : ndarray of str, shape (n_features,)
    container : {"default", "pandas", "polars"}
        scikit-learn's output container of the encoder's ``transform``.

    Returns
    -------
    EncodedArray or EncodedFrame
        A plain ndarray for another container (scikit-learn converts it; nothing is carried).
    """
    if container == "pandas":
        out = EncodedFrame(np.asarray(features), columns=list(names), index=visits.index)
        out.visits = visits
        out.encoder = encoder
        return out
    if container == "default":
        return EncodedArray(features, visits, encoder)
    return np.asarray(features)


def carried(X):
    """The visits and encoder carried by an encoder's output, or ``(X, None)``.

    Parameters
    ----------
    X : object
        Anything handed to an estimator as X.

    Returns
    -------
    visits : object
        The carried visit frame, or X itself.
    encoder : SpatialSemanticEncoder or None
        The carried fitted encoder; None when X carries nothing.
    """
    encoder = getattr(X, "encoder", None) if isinstance(X, (EncodedArray, EncodedFrame)) else None
    if encoder is None:
        return X, None
    return X.visits, encoder
