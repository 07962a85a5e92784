"""Pictures of predictions, of the router and of transfer results (matplotlib, optional).

matplotlib is an optional dependency (the ``plot`` extra: ``python3 -m pip install
"trajmoe[plot]"``). It is imported when a function is called, never when this module is, and
each function says so with an :class:`ImportError` when it is missing. Every function draws on
the axes it is given (or on a new figure) and returns the matplotlib objects, so that a caller
can restyle or save them.

* :func:`plot_prediction_map`: a user's window on the city's grid, the true next cell and the
  model's top-k cells;
* :func:`plot_gate_shares`: the router's weights of the POI, Geo and Pop experts by city and
  hour of day (from :meth:`trajmoe.TrajMoERegressor.gate_shares`);
* :func:`plot_transfer_curve`: a metric against the share of the target city's users used
  for fine-tuning, with reference models as horizontal lines.
"""

from __future__ import annotations

import numbers
import os
import warnings

import numpy as np
import pandas as pd

from .exceptions import DataWarning
from .schema import CITY, DEFAULT_CITY, USER, format_rows

__all__ = ["plot_gate_shares", "plot_prediction_map", "plot_transfer_curve"]

#: Axis wording of the evaluation protocols (see :mod:`trajmoe.metrics`).
_PROTOCOL_NAMES = {"all": "all positions", "last": "last position"}
#: Display names of the specialist experts (column ``expert`` of ``gate_shares``).
EXPERT_NAMES = {"poi": "POI expert", "geo": "Geo expert", "pop": "Pop expert"}


def _pyplot():
    """matplotlib.pyplot, or an ImportError naming the extra that installs it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "trajmoe.plotting needs matplotlib, an optional dependency of trajmoe. Install it with "
            "`python3 -m pip install \"trajmoe[plot]\"` (or `python3 -m pip install matplotlib`).") from exc
    return plt


def _check_columns(frame, columns, name, producer):
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks the columns {missing} (has {list(frame.columns)}); pass the "
                         f"frame returned by {producer}.")


def _check_axes(axes, name):
    """Raise a TypeError unless every item of ``axes`` is a matplotlib Axes."""
    from matplotlib.axes import Axes

    for ax in axes:
        if not isinstance(ax, Axes):
            raise TypeError(f"{name} must be matplotlib Axes (e.g. from plt.subplots()), got "
                            f"{type(ax).__name__} {ax!r}.")


def _numeric_column(frame, col, name, producer):
    """Column ``col`` as float64; a ValueError names the rows that hold no number."""
    values = frame[col]
    if pd.api.types.is_bool_dtype(values):
        raise ValueError(f"{name} column {col!r} is boolean; pass the frame returned by {producer}.")
    number = pd.to_numeric(values, errors="coerce")
    bad = (number.isna() & values.notna()).to_numpy()
    if bad.any():
        raise ValueError(f"{name} column {col!r} has {int(bad.sum())} non-numeric value"
                         f"{'' if bad.sum() == 1 else 's'} at rows {format_rows(frame.index, bad)} "
                         f"(e.g. {values[bad].iloc[0]!r}): convert them with pd.to_numeric or pass the "
                         f"frame returned by {producer}.")
    return number.astype("float64")


# --------------------------------------------------------------------------------------------------
# a user's window and the predicted cells on the city's grid
# --------------------------------------------------------------------------------------------------
def _cells_of_labels(labels):
    """(ix, iy) of labels ``"<city>:<ix>_<iy>"``; None labels are left out."""
    cells = [tuple(int(v) for v in str(label).rsplit(":", 1)[1].split("_")) for label in labels if label is not None]
    return np.array(cells, dtype=np.int64).reshape(-1, 2)


def _default_visit(estimator, X):
    """Label of the default visit of :func:`plot_prediction_map` (see its ``visit``)."""
    prep, windows = estimator._visit_windows(X)
    has_target = windows.target_row >= 0
    if not has_target.any():
        raise ValueError("No visit of X is followed by another visit in its window: there is nothing to "
                         "predict. Pass more visits of a user.")
    rows = windows.row[has_target]                  # sorted positions of the candidate visits
    depth = np.nonzero(has_target)[1]               # visits before each one in its window
    first = np.argmin(prep.order[rows])             # the candidate earliest in X's order: its user
    same_user = prep.user_key[rows] == prep.user_key[rows[first]]
    best = np.flatnonzero(same_user)[np.argmax(depth[same_user])]
    return X.index[prep.order[rows[best]]]


def plot_prediction_map(estimator, X, visit=None, k=5, *, n_history=10, margin=1000.0, ax=None):
    """Draw a user's window, the true next cell and the top-k predicted cells on the city's grid.

    The picture is in the city's metric grid (see :class:`trajmoe.spatial.CityGrid`), centred
    on the current cell: every cell is a square of ``cell_size`` metres. It shows

    * the cells of the city's vocabulary around the window, shaded by their training visits
      (log scale; a :class:`~matplotlib.collections.PatchCollection` in ``ax.collections``);
    * the last ``n_history`` visits of the window up to and including ``visit`` as a line
      through the centres of their cells (the first of ``ax.lines``; the current cell is
      circled);
    * the ``k`` best cells of :meth:`~trajmoe.estimators.NextLocationEstimator.predict_topk`
      as filled squares numbered by rank in their upper left corner (the first ``k`` of
      ``ax.patches``);
    * the true next cell, when the window goes on after ``visit``, as a thick red outline
      (the last of ``ax.patches``).

    Parameters
    ----------
    estimator : fitted next-location estimator
        Any trajmoe estimator (TrajMoE, a neural or counting baseline) fitted on the city of
        ``visit``.
    X : DataFrame of shape (n_visits, n_columns)
        Canonical visit frame holding ``visit`` and the user's other visits (only the rows of
        that user and city are read).
    visit : hashable, optional
        Index label of the row of X after which the next location is predicted. Default: the
        first user of X (in X's order) who has a visit followed by another in the same window,
        at such a visit with the longest history (also where X's index repeats labels).
    k : int, default 5
        Number of predicted cells drawn.
    n_history : int or None, default 10
        Most recent visits of the window drawn (the model reads all of them); None = all.
    margin : float, default 1000.0
        Metres of grid shown around the drawn cells.
    ax : matplotlib Axes, optional
        Axes to draw on; default a new figure.

    Returns
    -------
    fig : matplotlib Figure
    ax : matplotlib Axes
        Axis units: metres east (x) and north (y) of the current cell's centre.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install "trajmoe[plot]"``).
    KeyError
        If ``visit`` is not the label of exactly one row of X.
    ValueError
        If ``k``, ``n_history`` or ``margin`` is invalid.
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.

    Examples
    --------
    One user on a pre-gridded city (``x``/``y`` cell indices, 500 m cells): after visits to the
    cells (0, 0), (1, 0), (0, 0), history frequency ranks the twice-visited cell first and the
    cell the user went to next, 500 m east, second.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> from trajmoe import HistoryFrequencyBaseline
    >>> X = pd.DataFrame({"user_id": 1, "day": 0, "slot": [0, 1, 2, 3], "x": [0, 1, 0, 1], "y": 0})
    >>> model = HistoryFrequencyBaseline(min_stays=1).fit(X)
    >>> fig, ax = plot_prediction_map(model, X, visit=2, k=2)
    >>> [tuple(float(v) for v in square.get_xy()) for square in ax.patches]   # lower-left corners (m)
    [(-250.0, -250.0), (250.0, -250.0), (250.0, -250.0)]
    >>> ax.get_title().splitlines()[0]
    'city, user 1: true next cell ranked 2'
    """
    plt = _pyplot()
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "encoder_")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}.")
    if n_history is not None and (isinstance(n_history, bool) or not isinstance(n_history, numbers.Integral)
                                  or n_history < 1):
        raise ValueError(f"n_history must be None or an int >= 1, got {n_history!r}.")
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0 <= margin < np.inf:
        raise ValueError(f"margin must be a finite number of metres >= 0, got {margin!r}.")
    if not isinstance(X, pd.DataFrame) or USER not in X.columns or not len(X):
        raise ValueError(f"X must be a non-empty visit DataFrame with a {USER!r} column.")
    if ax is not None:
        _check_axes([ax], "ax")
    if visit is None:
        if not X.index.is_unique:        # the default is found by position: any index will do
            X = X.reset_index(drop=True)
        visit = _default_visit(estimator, X)
    matches = np.flatnonzero(X.index == visit)
    if len(matches) != 1:
        raise KeyError(f"visit={visit!r} must be the index label of exactly one row of X "
                       f"({len(matches)} rows have it).")
    row = X.iloc[matches[0]]
    city = str(row[CITY]) if CITY in X.columns else DEFAULT_CITY
    same = X[USER] == row[USER]
    if CITY in X.columns:
        same &= X[CITY] == row[CITY]
    rows = X[same]
    position = int(np.flatnonzero(rows.index == visit)[0])

    prep, windows = estimator._visit_windows(rows)
    if prep.twin is not None:          # an exact duplicate row is the visit it repeats
        position = int(prep.twin[position])
    sorted_position = int(np.flatnonzero(prep.order == position)[0])
    where = np.argwhere(windows.row == sorted_position)
    if not len(where):
        raise ValueError(f"visit={visit!r} is in no evaluation window of the estimator.")
    w, j = where[0]
    n_window = j + 1
    history = prep.cell[windows.row[w, :j + 1][-(n_history or n_window):]]
    target_row = windows.target_row[w, j]
    truth = prep.cell[target_row] if target_row >= 0 else None
    labels = estimator.predict_topk(rows, k=k)[0][position]
    top = _cells_of_labels(labels)

    table = estimator.encoder_.cities_[city]
    grid = table.grid
    size = grid.cell_size
    origin = grid.centroid_metres(history[-1:, 0], history[-1:, 1])[0]

    def centres(cells):
        return grid.centroid_metres(cells[:, 0], cells[:, 1]) - origin

    path, top_xy = centres(history), centres(top)
    shown = [path, top_xy] + ([centres(truth[None])] if truth is not None else [])
    low = np.min([s.min(axis=0) for s in shown if len(s)], axis=0) - size / 2 - margin
    high = np.max([s.max(axis=0) for s in shown if len(s)], axis=0) + size / 2 + margin

    if ax is None:
        fig, ax = plt.subplots(figsize=(8.4, 6.4), layout="constrained")
    else:
        fig = ax.figure
    fitted = table.n_locations - table.n_unseen
    grid_xy = centres(table.cells[:fitted])
    inside = np.all((grid_xy >= low - size) & (grid_xy <= high + size), axis=1)
    background = PatchCollection([Rectangle((x - size / 2, y - size / 2), size, size) for x, y in grid_xy[inside]],
                                 cmap="Greys", edgecolor="0.85", linewidth=0.3, alpha=0.6, zorder=0)
    background.set_array(np.log1p(table.visit_counts[:fitted][inside]).astype(float))
    background.set_clim(0, max(float(np.log1p(table.visit_counts[:fitted]).max()), 1.0))
    ax.add_collection(background)

    shown_visits = (f"window so far ({n_window} visits)" if len(path) == n_window
                    else f"last {len(path)} of the window's {n_window} visits")
    ax.plot(path[:, 0], path[:, 1], "-o", color="C0", markersize=4, linewidth=1.2, zorder=3, label=shown_visits)
    ax.plot([0.0], [0.0], "o", markersize=14, markerfacecolor="none", markeredgecolor="C0",
            markeredgewidth=2, zorder=3, label="current cell")
    rank_of_truth = None
    for rank, (x, y) in enumerate(top_xy, start=1):
        ax.add_patch(Rectangle((x - size / 2, y - size / 2), size, size, facecolor="C1",
                               alpha=max(0.85 - 0.12 * (rank - 1), 0.25), edgecolor="C1", zorder=2,
                               label=f"top-{len(top_xy)} predicted (number = rank)" if rank == 1 else None))
        ax.text(x - 0.42 * size, y + 0.42 * size, str(rank), ha="left", va="top", fontsize=8, zorder=4)
        if truth is not None and (top[rank - 1] == truth).all():
            rank_of_truth = rank
    if truth is not None:
        tx, ty = centres(truth[None])[0]
        ax.add_patch(Rectangle((tx - size / 2, ty - size / 2), size, size, fill=False, edgecolor="C3",
                               linewidth=2.5, zorder=5, label="true next cell"))
        outcome = (f"true next cell ranked {rank_of_truth}" if rank_of_truth is not None
                   else f"true next cell not in the top {k}")
    else:
        outcome = "last visit of the window: no true next cell"
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal")
    ax.xaxis.set_major_locator(MaxNLocator(6))        # metres of a wide map: labels apart
    ax.set_xlabel("east of the current cell (m)")
    ax.set_ylabel("north of the current cell (m)")
    ax.set_title(f"{city}, user {row[USER]}: {outcome}\n({size:g} m cells, shade: training visits)",
                 fontsize=10)
    # right of the map: below it, the legend covered the x label of a wide (short) map
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)
    return fig, ax


# --------------------------------------------------------------------------------------------------
# the router's gate by city and hour
# --------------------------------------------------------------------------------------------------
def plot_gate_shares(shares, *, axes=None):
    """Draw the router's expert shares by city (bars) and by hour of day (one panel per city).

    Parameters
    ----------
    shares : DataFrame
        As returned by :meth:`trajmoe.TrajMoERegressor.gate_shares`: columns ``city``,
        ``hour`` (0..23, local time), ``expert`` (``"poi"``, ``"geo"``, ``"pop"``),
        ``share`` (mean gate weight in [0, 1]) and optionally ``n_visits`` (the city's bars
        then weight every hour by its visits; else hours count equally).
    axes : sequence of matplotlib Axes, optional
        ``1 + n_cities`` axes: the first gets the bars, the others the hourly lines of each
        city (cities sorted; their y range fits the data, the bars' is [0, 1]). Default: a
        new figure with one row of panels.

    Returns
    -------
    fig : matplotlib Figure
    axes : ndarray of matplotlib Axes, shape (1 + n_cities,)
        ``axes[0]``: one bar per (city, expert) in ``axes[0].patches`` (expert-major order:
        the POI bars of every city, then Geo, then Pop), height = the expert's share of the
        city's visits. ``axes[1 + i]``: one line per expert in ``lines``, x = hour (0..23),
        y = share.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install "trajmoe[plot]"``).
    ValueError
        If a column is missing, the frame is empty, a (city, hour, expert) has several rows, or
        ``axes`` has the wrong length.

    Examples
    --------
    With a fitted model: ``plot_gate_shares(model.gate_shares(test_visits))``. By hand:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> shares = pd.DataFrame({"city": "nyc", "hour": [8, 8, 8, 20, 20, 20],
    ...                        "expert": ["poi", "geo", "pop"] * 2, "share": [.5, .3, .2, .2, .3, .5],
    ...                        "n_visits": [30, 30, 30, 10, 10, 10]})
    >>> fig, axes = plot_gate_shares(shares)
    >>> [round(float(bar.get_height()), 3) for bar in axes[0].patches]   # weighted by visits
    [0.425, 0.3, 0.275]
    """
    plt = _pyplot()
    if not isinstance(shares, pd.DataFrame):
        raise ValueError(f"shares must be the DataFrame of TrajMoERegressor.gate_shares, got {type(shares).__name__}.")
    _check_columns(shares, ("city", "hour", "expert", "share"), "shares", "TrajMoERegressor.gate_shares(X)")
    if not len(shares):
        raise ValueError("shares is empty: no visit of X was read by the router.")
    producer = "TrajMoERegressor.gate_shares(X)"
    numbers_of = {col: _numeric_column(shares, col, "shares", producer)
                  for col in ("hour", "share", "n_visits") if col in shares.columns}
    shares = shares.assign(**numbers_of)
    missing = (shares["city"].isna() | shares["expert"].isna()).to_numpy()
    if missing.any():
        raise ValueError(f"shares has {int(missing.sum())} rows without a city or expert at rows "
                         f"{format_rows(shares.index, missing)}: fill or drop them.")
    slack = 1e-6  # a mean of float32 gate weights may pass 1 by a rounding error
    for col, lo, hi in (("hour", 0, 23), ("share", 0, 1), ("n_visits", 0, np.inf)):
        if col in shares.columns:
            tol = slack if col == "share" else 0
            bad = ~shares[col].between(lo - tol, hi + tol).to_numpy()
            if bad.any():
                raise ValueError(f"shares column {col!r} has {int(bad.sum())} value"
                                 f"{'' if bad.sum() == 1 else 's'} outside {lo}..{hi} (or NaN) at rows "
                                 f"{format_rows(shares.index, bad)}; pass the frame returned by {producer}.")
    if "n_visits" in shares.columns:
        total = shares.groupby([shares["city"].astype(str), shares["expert"]])["n_visits"].sum()
        if (total <= 0).any():
            raise ValueError(f"shares has no visit (n_visits sums to 0) for (city, expert) "
                             f"{list(total.index[total <= 0])[:5]}: drop those rows.")
    repeated = shares.duplicated(["city", "hour", "expert"], keep=False).to_numpy()
    if repeated.any():
        raise ValueError(f"shares has {int(repeated.sum())} rows that repeat a (city, hour, expert) at rows "
                         f"{format_rows(shares.index, repeated)}: one share each (concatenated calls of "
                         f"{producer}?); average or drop them first.")
    experts = [e for e in EXPERT_NAMES if e in set(shares["expert"])]
    experts += sorted(set(shares["expert"]) - set(experts))
    cities = sorted(shares["city"].astype(str).unique())
    frame = shares.assign(city=shares["city"].astype(str),
                          weight=shares["n_visits"] if "n_visits" in shares.columns else 1.0)
    if axes is None:
        fig, axes = plt.subplots(1, 1 + len(cities), figsize=(3.2 * (1 + len(cities)), 3.2), squeeze=False,
                                 layout="constrained")
        axes = axes[0]
    else:
        axes = np.asarray(axes, dtype=object).ravel()
        if len(axes) != 1 + len(cities):
            raise ValueError(f"axes must hold 1 + n_cities = {1 + len(cities)} axes, got {len(axes)}.")
        _check_axes(axes, "axes")
        fig = axes[0].figure

    bars = axes[0]
    width = 0.8 / len(experts)
    for e, expert in enumerate(experts):
        part = frame[frame["expert"] == expert]
        by_city = part.groupby("city").apply(lambda g: np.average(g["share"], weights=g["weight"]),
                                             include_groups=False).reindex(cities)
        bars.bar(np.arange(len(cities)) + (e - (len(experts) - 1) / 2) * width, by_city.to_numpy(float), width,
                 color=f"C{e}", label=EXPERT_NAMES.get(expert, expert))
    bars.set_xticks(np.arange(len(cities)), cities, rotation=30, ha="right", fontsize=8)
    bars.set_ylabel("mean gate weight")
    bars.set_ylim(0, 1)
    bars.set_title("by city", fontsize=10)
    bars.legend(fontsize=7)

    # the hourly panels share a y range fitted to the data: gates often stay near 1/3
    low = max(0.0, float(frame["share"].min()) - 0.05)
    high = min(1.0, float(frame["share"].max()) + 0.05)
    for ax, city in zip(axes[1:], cities):
        part = frame[frame["city"] == city]
        for e, expert in enumerate(experts):
            line = part[part["expert"] == expert].sort_values("hour")
            ax.plot(line["hour"].to_numpy(), line["share"].to_numpy(float), "-o", markersize=3,
                    color=f"C{e}", label=EXPERT_NAMES.get(expert, expert))
        ax.set_xlim(-0.5, 23.5)
        ax.set_xticks([0, 6, 12, 18, 23])
        ax.set_ylim(low, high)
        ax.set_xlabel("hour of day (local)")
        ax.set_title(city, fontsize=10)
    if len(axes) > 1:
        axes[1].set_ylabel("mean gate weight")
    return fig, np.asarray(axes, dtype=object)


# --------------------------------------------------------------------------------------------------
# a metric against the share of the target city used for fine-tuning
# --------------------------------------------------------------------------------------------------
def plot_transfer_curve(results, metric="acc@1", *, curve=None, label=None, references=None, protocol="all",
                        axes=None):
    """Draw a metric against the share of the target city's users used for fine-tuning.

    One panel per target city: the curve model's mean over seeds (or splits) at every
    fraction with one standard deviation as error bars, and each reference model's mean as a
    horizontal line (models trained on all of the target city, baselines).

    Parameters
    ----------
    results : DataFrame or list of dict
        One row per (model, target city, fraction, seed) with columns ``target_city``,
        ``fraction`` (share of the target's training users in (0, 1]) and ``metric``;
        optionally ``model`` (without it every row belongs to the curve) and ``protocol``.
        The rows of ``benchmarks/transfer.py`` and the frame of
        :func:`trajmoe.model_selection.cross_city_validate` both fit.
    metric : str, default "acc@1"
        Column drawn (for example ``"acc@1"``, ``"mrr"``).
    curve : str, optional
        Value of the ``model`` column drawn as the curve; default the first model in the
        rows. Ignored without a ``model`` column.
    label : str, optional
        Legend label of the curve; default ``curve``.
    references : dict, optional
        Models drawn as horizontal lines at their mean: model -> legend label (str) or
        model -> keyword arguments of :meth:`matplotlib.axes.Axes.axhline` (``label``,
        ``color``, ``linestyle``, ...). Default: every other model of the rows, labelled
        by name. Models absent from a city's rows are skipped.
    protocol : str or None, default "all"
        With a ``protocol`` column, only its rows with this value are drawn (None: all rows).
    axes : sequence of matplotlib Axes, optional
        One per target city (sorted in order of first appearance); default a new figure.

    Returns
    -------
    fig : matplotlib Figure
    axes : ndarray of matplotlib Axes, shape (n_target_cities,)
        x axis: fraction in percent of the target city's training users; y axis: the
        metric. In each panel ``lines[0]`` is the curve (its error bars add cap lines and
        ``collections[0]``) and the last lines are the references drawn, in the order given.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install "trajmoe[plot]"``).
    TypeError
        If ``results`` is a path or neither a DataFrame nor a list of dicts, or ``references``
        is not a dict.
    ValueError
        If a column is missing, no row is left to draw, a fraction of the curve model is outside
        (0, 1] (a percent given for a share), or ``axes`` has the wrong length.

    Warns
    -----
    trajmoe.exceptions.DataWarning
        If rows have no value of ``metric`` (NaN): they are left out of the means, with their count
        and rows.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> rows = [{"target_city": "nyc", "fraction": f, "seed": s, "acc@1": a}
    ...         for f, s, a in [(0.01, 0, .20), (0.01, 1, .22), (0.05, 0, .25), (0.05, 1, .27)]]
    >>> fig, axes = plot_transfer_curve(rows)
    >>> [[round(float(v), 2) for v in point] for point in axes[0].lines[0].get_xydata()]   # (%, mean)
    [[1.0, 0.21], [5.0, 0.26]]
    """
    plt = _pyplot()
    producer = "benchmarks/transfer.py or trajmoe.model_selection.cross_city_validate"
    if isinstance(results, (str, bytes, os.PathLike)):
        raise TypeError(f"results must be a DataFrame or a list of dicts, got the path {results!r}: "
                        f"read it first, e.g. plot_transfer_curve(pd.read_csv(path)).")
    try:
        frame = pd.DataFrame(results)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"results must be a DataFrame or a list of dicts (one per run), got "
                        f"{type(results).__name__}: {exc}") from None
    if references is not None and not isinstance(references, dict):
        raise TypeError(f"references must be a dict model -> label (str) or axhline keyword arguments, "
                        f"got {type(references).__name__} {references!r}, e.g. references={{'markov': 'Markov'}}.")
    _check_columns(frame, ("target_city", "fraction", metric), "results", producer)
    frame = frame.assign(fraction=_numeric_column(frame, "fraction", "results", producer),
                         **{metric: _numeric_column(frame, metric, "results", producer)})
    by_protocol = protocol is not None and "protocol" in frame.columns
    if by_protocol:
        frame = frame[frame["protocol"] == protocol]
    if "model" not in frame.columns:
        frame = frame.assign(model=curve or "model")
    if not len(frame):
        raise ValueError(f"results has no row to draw (protocol={protocol!r}).")
    curve = curve if curve is not None else frame["model"].iloc[0]
    if curve not in set(frame["model"]):
        raise ValueError(f"curve={curve!r} is not a model of results; models: {sorted(set(frame['model']))}.")
    outside = ((frame["model"] == curve) & ~frame["fraction"].between(0, 1, inclusive="right")).to_numpy()
    if outside.any():
        raise ValueError(f"results column 'fraction' has {int(outside.sum())} value(s) of the curve model "
                         f"{curve!r} outside (0, 1] at rows {format_rows(frame.index, outside)}: give the share "
                         "of the target's training users (0.05 for 5 %), not a percent.")
    missing = frame[metric].isna().to_numpy()
    if missing.any():
        warnings.warn(f"results has {int(missing.sum())} row(s) without a {metric!r} value, left out of the "
                      f"means: rows {format_rows(frame.index, missing)}.", DataWarning, stacklevel=2)
    if references is None:
        references = {m: str(m) for m in dict.fromkeys(frame["model"]) if m != curve}
    unknown = [m for m in references if m not in set(frame["model"])]
    if unknown:
        raise ValueError(f"references {unknown} are not models of results; models: "
                         f"{sorted(set(frame['model']), key=str)}.")
    cities = list(dict.fromkeys(frame["target_city"]))
    if axes is None:
        fig, axes = plt.subplots(1, len(cities), figsize=(5 * len(cities), 3.8), squeeze=False,
                                 layout="constrained")
        axes = axes[0]
    else:
        axes = np.asarray(axes, dtype=object).ravel()
        if len(axes) != len(cities):
            raise ValueError(f"axes must hold one Axes per target city ({len(cities)}), got {len(axes)}.")
        _check_axes(axes, "axes")
        fig = axes[0].figure
    for ax, city in zip(axes, cities):
        data = frame[frame["target_city"] == city]
        points = data[data["model"] == curve].groupby("fraction")[metric].agg(["mean", "std"]).sort_index()
        ax.errorbar(points.index.to_numpy(float) * 100, points["mean"].to_numpy(float),
                    yerr=points["std"].fillna(0).to_numpy(float), marker="o", capsize=3, label=label or str(curve))
        for model, style in references.items():
            values = data.loc[data["model"] == model, metric]
            if not len(values):
                continue
            kwargs = {"label": style} if isinstance(style, str) else dict(style)
            kwargs.setdefault("label", str(model))
            kwargs.setdefault("linestyle", "--")
            ax.axhline(float(values.mean()), **kwargs)
        ax.set_xlabel("share of the target city's training users (%)")
        ax.set_ylabel(f"{metric} ({_PROTOCOL_NAMES.get(protocol, protocol)})" if by_protocol else metric)
        ax.set_title(str(city))
        if len(points):
            ax.set_xticks(points.index.to_numpy(float) * 100)
    axes[-1].legend(fontsize=7, loc="best")
    return fig, np.asarray(axes, dtype=object)
