"""What the frame-to-frame pipeline steps of :mod:`trajmoe.preprocessing` share."""

from __future__ import annotations

from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["FrameTransformer"]


class FrameTransformer(TransformerMixin, BaseEstimator):
    """Base class of the steps that take a visit frame and return a visit frame.

    Stateless: ``fit`` checks the parameters, ``transform`` works on any frame. The output is
    always a DataFrame, so ``set_output`` has nothing to configure (it is accepted, so that
    ``Pipeline.set_output`` works).
    """

    def fit(self, X, y=None):
        """Check the parameters (nothing is learned).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Visit frame.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        return self

    def set_output(self, *, transform=None):
        """Accept an output configuration: the output is a DataFrame whatever it says.

        Parameters
        ----------
        transform : {"default", "pandas", "polars"} or None, default None
            Ignored.

        Returns
        -------
        self
        """
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False       # rows are visits of a DataFrame
        tags.input_tags.string = True
        tags.requires_fit = False
        return tags
