"""A scikit-learn pipeline that can be fine-tuned: :class:`Pipeline` adds ``partial_fit``.

scikit-learn's :class:`sklearn.pipeline.Pipeline` has no ``partial_fit`` (scikit-learn issue
#3299; the pull request #11321 that proposed one was closed unmerged), so
``make_pipeline(StayPointDetector(...), TrajMoERegressor()).partial_fit(X)`` raises an
AttributeError. :class:`Pipeline` is scikit-learn's pipeline with that one method;
:func:`make_pipeline` builds one as scikit-learn's :func:`sklearn.pipeline.make_pipeline` does.
"""

from __future__ import annotations

import inspect
import warnings

import sklearn.pipeline
from sklearn import get_config
from sklearn.exceptions import NotFittedError
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .exceptions import ZeroShotWarning

__all__ = ["Pipeline", "make_pipeline"]


def _final_step_has_partial_fit(pipe):
    """``available_if`` check: the last step has a ``partial_fit`` (else an AttributeError)."""
    final = pipe.steps[-1][1]
    if final is None or final == "passthrough" or not hasattr(final, "partial_fit"):
        raise AttributeError(
            f"This Pipeline has no attribute 'partial_fit': its last step {pipe.steps[-1][0]!r} "
            f"({type(final).__name__}) has no partial_fit.")
    return True


def _final_step_has(method):
    """``available_if`` check: whether the last step has ``method``."""
    return lambda pipe: hasattr(pipe.steps[-1][1], method)


def _passed_through(method, params, returns):
    """A Pipeline method that calls the last step's ``method`` on X transformed by the steps
    before it (available where the last step has it)."""
    def call(self, X, **kwargs):
        return getattr(self.steps[-1][1], method)(self._transformed(X), **kwargs)

    call.__name__ = call.__qualname__ = method
    call.__doc__ = f"""The last step's ``{method}`` of X transformed by the steps before it.

        Parameters
        ----------
        X : DataFrame
            Input of the first step.
        **kwargs
            Parameters of the last step's ``{method}`` ({params}).

        Returns
        -------
        {returns}
            As :meth:`trajmoe.estimators.NextLocationEstimator.{method}` returns it.
        """
    return available_if(_final_step_has(method))(call)


def _learns_from_fit(step):
    """Whether ``step`` keeps state learned by ``fit`` (False for the stateless steps)."""
    try:
        return get_tags(step).requires_fit
    except (AttributeError, TypeError, ValueError):  # not a scikit-learn estimator
        return True


def _check_accepts(method, name, what, params):
    """Raise a ValueError naming the parameters ``method`` does not take (before any work)."""
    if not params:
        return
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):  # no signature to check: the call itself will tell
        return
    accepted = signature.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in accepted):
        return
    names = [p.name for p in accepted if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(params) - set(names) - {"X", "y"})
    if unknown or {"X", "y"} & set(params):
        bad = unknown or sorted({"X", "y"} & set(params))
        raise ValueError(
            f"Step {name!r} ({type(getattr(method, '__self__', None)).__name__}.{what}) does not take the "
            f"parameters {bad}; it takes {[n for n in names if n not in ('X', 'y')]} "
            f"(pass them as {name}__parameter).")


def _is_fitted(step):
    try:
        check_is_fitted(step)
    except NotFittedError:
        return False
    return True


class Pipeline(sklearn.pipeline.Pipeline):
    """scikit-learn's :class:`~sklearn.pipeline.Pipeline` with ``partial_fit``.

    It also passes the rankings of trajmoe's models through (``predict_topk``, ``target_ranks``,
    ``target_table``, ``predict_and_evaluate``: the last step's method of X transformed by the
    steps before it, as ``predict``), so that :func:`trajmoe.metrics.evaluate` takes a pipeline.
    Everything else (``predict``, ``score``, ``transform``, indexing, ``clone``,
    ``get_params``/``set_params``, grid search, pickling) is scikit-learn's, unchanged, and so
    is ``fit`` but for one thing: it is atomic (a failed refit leaves the pipeline as it was). Use it
    (or :func:`make_pipeline`) to fine-tune a model that reads the output of preprocessing
    steps, e.g. a TrajMoE pre-trained in one city on the stay points of raw GPS fixes of
    another::

        pipe = make_pipeline(StayPointDetector(city="beijing", tz="Asia/Shanghai"),
                             TrajMoERegressor())
        pipe.fit(fixes_city_a).partial_fit(fixes_city_b)

    Parameters
    ----------
    steps : list of tuple of (str, estimator)
        As in :class:`sklearn.pipeline.Pipeline`: ``(name, transformer)`` pairs, the last one
        the model (``partial_fit`` needs a last step that has one).
    transform_input : list of str or None, default None
        As in :class:`sklearn.pipeline.Pipeline` (``fit`` only; metadata routing).
    memory : str or object with the joblib.Memory interface or None, default None
        As in :class:`sklearn.pipeline.Pipeline` (caches the transformers of ``fit``;
        ``partial_fit`` does not cache).
    verbose : bool, default False
        As in :class:`sklearn.pipeline.Pipeline` (times the steps of ``fit``).

    Attributes
    ----------
    named_steps : Bunch
        The steps by name, as in :class:`sklearn.pipeline.Pipeline`.

    See Also
    --------
    make_pipeline : Build a Pipeline, naming the steps after their classes.
    sklearn.pipeline.Pipeline : The parent class.

    Notes
    -----
    ``partial_fit`` follows scikit-learn's meaning (more training on new data, the first call
    may initialise) for the model; the preprocessing steps are treated as in ``fit`` when
    they learn nothing, and as in ``predict`` when they learned something:

    - a step that learns nothing from ``fit`` (tag ``requires_fit=False``: the steps of
      :mod:`trajmoe.preprocessing`) or that is not fitted yet gets ``fit_transform``, as in
      ``fit``; so :class:`~trajmoe.preprocessing.ShortUserFilter` also leaves the short users
      out of fine-tuning, and a pipeline whose first call is ``partial_fit`` is initialised;
    - a fitted step that learned from data gets ``transform`` only: what it learned from the
      first fit is kept and never refit on the (small) fine-tuning sample. This holds for a
      step with its own ``partial_fit`` too. A
      :class:`~trajmoe.SpatialSemanticEncoder` step is the exception in effect, not in rule:
      the trajmoe model after it extends that same encoder with the new visits (new cities,
      visit counts) in its own ``partial_fit``, exactly as without a pipeline. The encoder's
      ``transform`` warns (DataWarning) that a city it has not seen yet is described
      zero-shot; the model registers that city right after.

    Parameters of the steps are routed as in ``fit``: ``stepname__param``, e.g.
    ``pipe.partial_fit(X, trajmoeregressor__pois=pois)``; they go to the method the step gets
    (``fit_transform`` or the model's ``partial_fit``). A parameter for a step that only
    transforms raises a ValueError rather than being dropped. With scikit-learn's metadata
    routing enabled, ``partial_fit`` raises a ValueError (use ``stepname__param`` with
    routing disabled, the default).

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from trajmoe import HistoryFrequencyBaseline
    >>> from trajmoe.pipeline import make_pipeline
    >>> from trajmoe.preprocessing import ShortUserFilter
    >>> a = pd.DataFrame({"user_id": 1, "city": "a", "day": 0, "slot": np.arange(6), "x": 1,
    ...                   "y": np.arange(6)})
    >>> pipe = make_pipeline(ShortUserFilter(min_visits=2), HistoryFrequencyBaseline(min_stays=1))
    >>> pipe.fit(a).partial_fit(a.assign(city="b"))[-1].cities_
    ['a', 'b']
    """

    def fit(self, X, y=None, **params):
        """Fit every step, as :meth:`sklearn.pipeline.Pipeline.fit`, atomically.

        Parameters
        ----------
        X : DataFrame of shape (n_rows, n_columns) or what the first step reads
            Training data of the first step.
        y : None or array-like of shape (n_rows,), default None
            As in scikit-learn (None for the trajmoe models, whose targets derive from X).
        **params : dict of str -> object
            ``stepname__param`` keys (or routed metadata), as in scikit-learn.

        Returns
        -------
        self : Pipeline

        Raises
        ------
        Exception
            Whatever a step raises; the pipeline is then left as it was.

        Notes
        -----
        Atomic: if a step raises, the steps before it that ``fit_transform`` refitted in this
        call are put back as they were (and the list of steps, which a ``memory`` cache
        replaces with fitted clones), so that a failed refit leaves the fitted pipeline as it
        was. scikit-learn refits the transformers first: without this, a model whose own fit
        failed (and is atomic) went on predicting from an encoder step refitted on the failed
        call's data.
        """
        steps = list(self.steps)
        saved = [(step, dict(step.__dict__)) for _, step in steps[:-1]
                 if step is not None and not isinstance(step, str)]
        try:
            return super().fit(X, y, **params)
        except BaseException:
            for step, state in saved:
                step.__dict__.clear()
                step.__dict__.update(state)
            self.steps = steps
            raise

    @available_if(_final_step_has_partial_fit)
    def partial_fit(self, X, y=None, **params):
        """Fine-tune the last step on what the other steps make of X.

        Each step before the last one gets ``fit_transform`` (a step that learns nothing,
        or one not fitted yet) or ``transform`` (a fitted step that learned from data; see
        the class Notes), in order; the last step gets ``partial_fit`` on the result.

        Parameters
        ----------
        X : DataFrame of shape (n_rows, n_columns) or what the first step reads
            Training data of the first step, e.g. raw GPS fixes for a
            :class:`~trajmoe.preprocessing.StayPointDetector` or visits.
        y : None or array-like of shape (n_rows,), default None
            Passed to every step's ``fit_transform`` and to the last step's ``partial_fit``
            (None for the trajmoe models, whose targets derive from X).
        **params : dict of str -> object
            ``stepname__param`` keys, e.g. ``trajmoeregressor__pois=pois``: parameters of the
            method each step gets (see above).

        Returns
        -------
        self : Pipeline
            This pipeline, its last step further trained.

        Raises
        ------
        AttributeError
            If the last step has no ``partial_fit`` (``hasattr(pipe, "partial_fit")`` is
            then False, as scikit-learn's ``available_if`` methods are).
        ValueError
            If a parameter key is not ``stepname__param`` or names no step, if the last
            step's ``partial_fit`` does not take a parameter, if a step's own parameter is
            invalid (``InvalidParameterError``; both checked before any step runs),
            if a parameter is given to a step that only transforms, or if metadata routing
            is enabled.

        Notes
        -----
        Atomic: if a step raises, the steps that got ``fit_transform`` in this call are put
        back as they were (the last step's own ``partial_fit`` is atomic), so a failed call
        leaves the pipeline as it was.
        """
        if get_config()["enable_metadata_routing"]:
            raise ValueError(
                "Pipeline.partial_fit does not support metadata routing: with "
                "sklearn.set_config(enable_metadata_routing=False) (the default), pass step "
                "parameters as stepname__param, e.g. trajmoeregressor__pois=pois.")
        self.steps = list(self.steps)
        self._validate_steps()
        per_step = {name: {} for name, _ in self.steps}
        for key, value in params.items():
            name, sep, param = key.partition("__")
            if not sep or name not in per_step or not param:
                raise ValueError(
                    f"Pipeline.partial_fit does not accept the {key} parameter: pass parameters to a "
                    f"step as stepname__parameter (steps: {list(per_step)}), e.g. "
                    f"`pipe.partial_fit(X, {self.steps[-1][0]}__pois=pois)`.")
            per_step[name][param] = value
        name, final = self.steps[-1]
        _check_accepts(final.partial_fit, name, "partial_fit", per_step[name])
        for _, step in self.steps:  # invalid parameters fail now, not after the preprocessing
            if hasattr(step, "_parameter_constraints") and hasattr(step, "_validate_params"):
                step._validate_params()
        refit = []   # (step, its state before): steps that get fit_transform, restored on failure
        try:
            Xt = X
            for name, step in self.steps[:-1]:
                if step is None or step == "passthrough":
                    continue
                if not _learns_from_fit(step) or not _is_fitted(step):
                    refit.append((step, dict(step.__dict__)))  # fit binds new attributes
                    Xt = step.fit_transform(Xt, y, **per_step[name])
                elif per_step[name]:
                    raise ValueError(
                        f"Step {name!r} is fitted and partial_fit only transforms with it, so its "
                        f"parameters {sorted(per_step[name])} would not be used. Give them to the last "
                        f"step ({self.steps[-1][0]}__...), or refit the pipeline.")
                else:
                    with warnings.catch_warnings():
                        # a new city is about to be registered by the last step, not scored
                        warnings.simplefilter("ignore", ZeroShotWarning)
                        Xt = step.transform(Xt)
            name, final = self.steps[-1]
            final.partial_fit(Xt, y, **per_step[name])
        except BaseException:  # atomic: a failed call leaves every step as it was
            for step, state in refit:
                step.__dict__.clear()
                step.__dict__.update(state)
            raise
        return self


    def _transformed(self, X):
        """X through the ``transform`` of every step but the last (as ``predict`` does)."""
        for _, _, step in self._iter(with_final=False, filter_passthrough=True):
            X = step.transform(X)
        return X

    predict_topk = _passed_through("predict_topk", "``k``, ``zero_shot``, ``pois``",
                                   "labels, scores : ndarray of shape (n_visits, k)")
    target_ranks = _passed_through("target_ranks", "``protocol``, ``pois``", "Series of int64")
    target_table = _passed_through("target_table", "``protocol``, ``pois``", "DataFrame")
    predict_and_evaluate = _passed_through("predict_and_evaluate", "``k``, ``protocol``, ``ks``, ``pois``", "dict")

def make_pipeline(*steps, memory=None, transform_input=None, verbose=False):
    """Build a :class:`Pipeline` (with ``partial_fit``) from estimators, named after their classes.

    The drop-in for :func:`sklearn.pipeline.make_pipeline`, with the same arguments.

    Parameters
    ----------
    *steps : list of estimators
        The transformers, then the model.
    memory : str or object with the joblib.Memory interface or None, default None
        As in :func:`sklearn.pipeline.make_pipeline`.
    transform_input : list of str or None, default None
        As in :func:`sklearn.pipeline.make_pipeline`.
    verbose : bool, default False
        As in :func:`sklearn.pipeline.make_pipeline`.

    Returns
    -------
    Pipeline
        With steps named as scikit-learn names them (lower-case class names, numbered when
        repeated), e.g. ``"staypointdetector"``, ``"trajmoeregressor"``.

    Examples
    --------
    >>> from trajmoe import MarkovBaseline
    >>> from trajmoe.pipeline import make_pipeline
    >>> from trajmoe.preprocessing import ShortUserFilter
    >>> pipe = make_pipeline(ShortUserFilter(), MarkovBaseline())
    >>> list(pipe.named_steps), hasattr(pipe, "partial_fit")
    (['shortuserfilter', 'markovbaseline'], True)
    """
    built = sklearn.pipeline.make_pipeline(*steps, memory=memory, transform_input=transform_input,
                                           verbose=verbose)
    return Pipeline(**built.get_params(deep=False))
