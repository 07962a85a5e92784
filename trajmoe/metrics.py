"""Ranking metrics for next-location prediction: Acc@k, MRR, NDCG@k and scikit-learn scorers.

Every metric here works on *full* rankings: the true next cell is ranked against ALL of the city's
candidate cells (never against sampled negatives), as the user guide's section "Evaluation
protocols" requires.

Ranking convention (pessimistic ties)
-------------------------------------
Cells are ordered by score, descending. A tie never helps the true cell: every other cell with the
same score is counted as ranked before it. The 1-based rank of the true cell ``t`` among the ``N``
candidates of its row is therefore::

    rank = 1 + #{j : s_j > s_t} + #{j : s_j == s_t and j != t}

so a scorer that gives every cell the same score gets rank ``N`` for every target (chance level:
Acc@1 = 0 for ``N > 1``, MRR = ``1 / N``), never rank 1, and ranks do not depend on how location
ids are numbered. ``rank == 1`` exactly when the true cell has the strictly highest score. With
ties, Acc@1 can therefore be *below* the accuracy of an estimator's ``predict``, which returns the
lowest location id among the tied best cells. Pessimistic ties are the standard of honest
evaluation: an optimistic or id-based rule would reward a model for scores it did not separate.

A target that is not a candidate (out-of-vocabulary cell, id ``-1``) gets the sentinel rank
:data:`OOV_RANK` (the largest int64), never ``N + 1``: it is a miss for every ``k`` and
contributes exactly 0 to MRR and NDCG, as a rank of infinity would.

Protocols
---------
``"all"``
    every position that has a next visit in the same evaluation window is a target (teacher
    forcing, as the reference code of the paper scores).
``"last"``
    only the last target of each evaluation window (the common next-POI protocol).

Estimators expose ``target_ranks(X, protocol="all") -> pandas.Series`` (index = row labels of the
visits whose next visit is a target, values = rank in the convention above) and, for the estimators
of this library, ``target_table(X, protocol="all") -> pandas.DataFrame`` with the same index and
the columns ``rank``, ``kind`` (``"return"``: the true next cell was already visited earlier in the
window, current visit included; ``"explore"``: a new cell) and ``oov``. :func:`evaluate` uses
``target_table`` when the estimator has it (and then also reports every metric on returns and on
explorations separately); the scorers of this module call ``target_ranks``.

Scorers by name
---------------
Importing this module (as every trajmoe estimator does) registers the names of
:data:`SCORER_NAMES` with scikit-learn, so that they work wherever scikit-learn takes a scoring
name::

    cross_val_score(model, X, cv=LeaveOneCityOut(), scoring="mrr")
    cross_validate(model, X, cv=UserKFold(), scoring=["acc@1", "acc@5", "mrr", "ndcg@10"])
    GridSearchCV(model, grid, scoring="ndcg@10")

``acc@k`` and ``ndcg@k`` for k in 1, 3, 5, 10, 20 and ``mrr``, protocol ``"all"``; the same names
with the suffix ``_last`` (``"acc@1_last"``) use protocol ``"last"``. Other cut-offs:
:func:`get_scorer` (``scoring=get_scorer("acc@50")``). Without ``scoring``, scikit-learn uses the
estimator's ``score``: Acc@1, protocol ``"all"``.

References
----------
- Han, Yuan, Chen, Ding, Li. "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human
  Mobility Modeling", arXiv:2505.18670 (2025), evaluation section.
- The project's user guide (``docs/user_guide.rst``), sections "Evaluation protocols" (metrics,
  full ranking, both protocols) and "The copy path (option)" (about half of all next visits return
  to a cell already visited in the window).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from ._constants import PROTOCOLS
from ._validation import check_protocol, parse_metric_name

__all__ = [
    "OOV_RANK",
    "PROTOCOLS",
    "KINDS",
    "target_ranks",
    "accuracy_at_k",
    "mean_reciprocal_rank",
    "ndcg_at_k",
    "ranking_report",
    "evaluate",
    "acc_at_k_scorer",
    "mrr_scorer",
    "ndcg_scorer",
    "get_scorer",
    "SCORER_NAMES",
    "register_scorers",
]

#: Rank given to a target that is not among the candidates (out-of-vocabulary target, id ``-1``):
#: the largest int64, not ``N + 1``. It is larger than any possible real rank, so it is a miss for
#: every ``k``, and the metrics of this module read it as an infinite rank: 0 for MRR and NDCG.
OOV_RANK: int = int(np.iinfo(np.int64).max)

# Number of score entries (rows * candidates) compared at once by ``target_ranks``; one boolean
# temporary of this size is alive per chunk (about 4 MB).
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------------
# ranks
# --------------------------------------------------------------------------------------------------
def _is_torch_tensor(obj) -> bool:
    mod = type(obj).__module__
    return mod.startswith("torch") and hasattr(obj, "detach")


def target_ranks(scores, targets, *, chunk_size=None):
    """Rank of each true next location among all candidate cells (full ranking).

    Parameters
    ----------
    scores : ndarray or torch.Tensor of shape (n_targets, n_candidates), float
        Score (logit, log-probability, ...) of every candidate cell, higher = more likely. Columns
        are city-local location ids ``0..n_candidates-1``. ``-inf`` is allowed (masked cells);
        ``NaN`` is not. A CPU torch tensor is viewed as numpy without a copy; a tensor on another
        device (CUDA) is processed with torch on that device (no copy of the full matrix to the
        host).
    targets : array-like or torch.Tensor of shape (n_targets,), int
        True next location id of each row, in ``0..n_candidates-1``, or ``-1`` for an
        out-of-vocabulary target (a cell that is not a candidate).
    chunk_size : int, optional
        Rows compared at once. Default: as many rows as fit in about 4 M score entries (at least 1),
        so that a (50 000, 30 000) score matrix needs only a few MB of temporaries on top of itself.

    Returns
    -------
    ranks : ndarray of shape (n_targets,), int64
        1-based rank of the target: ``1 + #(s > s_t) + #(s == s_t and id != t)`` (score
        descending; every cell tied with the target counts as ranked before it), in
        ``1..n_candidates``; :data:`OOV_RANK` (the largest int64, not ``n_candidates + 1``) for
        targets equal to ``-1``.

    Raises
    ------
    ValueError
        If ``scores`` is not 2-D, ``targets`` is not 1-D of the same length, a target id is outside
        ``-1..n_candidates-1``, ``targets`` is not integer (booleans are not ids), ``chunk_size``
        is not a positive integer, or a row with an in-vocabulary target holds a ``NaN`` score
        (anywhere: a NaN would rank neither above nor below the target).

    See Also
    --------
    ranking_report : Acc@k, MRR and NDCG@k from these ranks.

    Notes
    -----
    Ties are pessimistic: they never reward the true cell. A constant scorer ranks every target
    last (``n_candidates``), i.e. chance level, and ``rank == 1`` exactly when the target's score
    is strictly the highest of its row. With ties, Acc@1 can be below the accuracy of an
    estimator's ``predict``, which takes the lowest location id among the tied best cells.
    Pessimistic ties are the standard of honest evaluation. The rule does not depend on how
    location ids are numbered, and the numpy path (CPU) and the torch path (CUDA tensors,
    ``bfloat16``) compute the same ranks.

    An out-of-vocabulary target gets :data:`OOV_RANK`, so that :func:`mean_reciprocal_rank` and
    :func:`ndcg_at_k` count it as exactly 0 and :func:`accuracy_at_k` as a miss for every ``k``.

    References
    ----------
    .. [1] arXiv:2505.18670; user guide, section "Evaluation protocols" (full ranking,
       never sampled negatives).

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.array([[0.1, 0.9, 0.9, 0.0],
    ...                    [0.5, 0.5, 0.5, 0.5]])
    >>> target_ranks(scores, [2, 3]).tolist()
    [2, 4]

    Cells 1 and 2 tie for the top: each ranks 2, whichever is the truth. A constant row ranks
    every target last (chance level):

    >>> target_ranks(scores, [1, 0]).tolist()
    [2, 4]
    >>> target_ranks(np.zeros((3, 10)), [0, 0, 0]).tolist()
    [10, 10, 10]
    >>> int(target_ranks(scores, [-1, 0])[0]) == OOV_RANK
    True
    """
    torch_mode = _is_torch_tensor(scores)
    if torch_mode and scores.device.type == "cpu" and str(scores.dtype) != "torch.bfloat16":
        # zero-copy view: numpy's comparisons are faster than torch's on the CPU
        scores, torch_mode = scores.detach().numpy(), False
    if torch_mode:
        import torch

        s_all = scores.detach()
        if s_all.is_complex():
            raise ValueError(f"scores must be real numbers, got dtype {s_all.dtype}: give float scores (higher is "
                             "better).")
        if _is_torch_tensor(targets):
            t_all = targets.detach().to(device=s_all.device)
        else:
            t_np = np.asarray(targets)
            if t_np.dtype.kind not in "iu" and t_np.size:
                raise ValueError(f"targets must be integer location ids, got dtype {t_np.dtype}.")
            t_all = torch.as_tensor(t_np.astype(np.int64, copy=False), device=s_all.device)
        if t_all.is_floating_point() or t_all.is_complex() or t_all.dtype == torch.bool:
            raise ValueError(f"targets must be integer location ids, got dtype {t_all.dtype}.")
        t_all = t_all.to(torch.int64)
        ndim_s, ndim_t = s_all.dim(), t_all.dim()
    else:
        s_all = np.asarray(scores)
        if s_all.dtype.kind not in "fiub":
            raise ValueError(f"scores must be real numbers, got dtype {s_all.dtype}: give float scores (higher is "
                             "better).")
        t_all = targets.detach().cpu().numpy() if _is_torch_tensor(targets) else targets
        if isinstance(getattr(t_all, "dtype", None), pd.api.extensions.ExtensionDtype):    # nullable Int64, ...
            t_all = t_all.to_numpy(dtype=float, na_value=np.nan) if pd.isna(t_all).any() else t_all.to_numpy()
        t_all = np.asarray(t_all)
        if t_all.dtype.kind == "f" and np.isnan(t_all).any():
            rows = np.flatnonzero(np.isnan(t_all))
            raise ValueError(f"targets has {len(rows)} missing id(s) at rows {rows[:5].tolist()}: give every row its "
                             "location id (-1 for a target outside the vocabulary).")
        if t_all.dtype.kind not in "iu" and t_all.size:
            raise ValueError(f"targets must be integer location ids, got dtype {t_all.dtype}.")
        if t_all.dtype.kind == "u" and t_all.size and t_all.max() > np.iinfo(np.int64).max:
            raise ValueError(f"targets must be location ids in 0..{s_all.shape[-1] - 1} (or -1 for out-of-vocabulary); "
                             f"{int((t_all > np.iinfo(np.int64).max).sum())} are not, e.g. {int(t_all.max())}.")
        t_all = t_all.astype(np.int64, copy=False)
        ndim_s, ndim_t = s_all.ndim, t_all.ndim

    if ndim_s != 2:
        raise ValueError(
            f"scores must be 2-D of shape (n_targets, n_candidates), got {ndim_s}-D "
            f"shape {tuple(s_all.shape)}."
        )
    if ndim_t != 1 or t_all.shape[0] != s_all.shape[0]:
        raise ValueError(
            f"targets must be 1-D with one id per row of scores ({s_all.shape[0]} rows), got shape "
            f"{tuple(t_all.shape)}."
        )
    n, n_cand = int(s_all.shape[0]), int(s_all.shape[1])
    if n == 0:
        return np.empty(0, dtype=np.int64)
    t_min, t_max = int(t_all.min()), int(t_all.max())
    if t_min < -1 or t_max >= n_cand:
        bad = t_all[(t_all < -1) | (t_all >= n_cand)]
        bad = bad.cpu().numpy() if torch_mode else bad
        ids = (f"location ids in 0..{n_cand - 1} (or -1 for out-of-vocabulary)" if n_cand else
               "-1 (out of vocabulary): scores has no column, so there is no cell to rank them among")
        raise ValueError(f"targets must be {ids}; {len(bad)} are not, e.g. {bad[:5].tolist()}.")
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(n_cand, 1))
    elif (
        not isinstance(chunk_size, numbers.Integral)
        or isinstance(chunk_size, bool)
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")

    out = np.empty(n, dtype=np.int64)
    if n_cand == 0:  # every target is necessarily OOV (checked above)
        out[:] = OOV_RANK
        return out

    if torch_mode:
        for start in range(0, n, chunk_size):
            s = s_all[start : start + chunk_size]
            t = t_all[start : start + chunk_size]
            valid = t >= 0
            st = s.gather(1, t.clamp(min=0)[:, None])  # [c, 1]
            nan_rows = torch.isnan(s.amax(1)) & valid     # a row maximum is NaN when the row holds one
            if bool(nan_rows.any()):
                _raise_nan_rows(start + np.flatnonzero(nan_rows.cpu().numpy()))
            # 1 + #(s > s_t) + #(s == s_t, j != t) == #(s >= s_t), as s_t is not NaN
            r = (s >= st).sum(1)
            r = torch.where(valid, r, torch.full_like(r, OOV_RANK))
            out[start : start + len(t)] = r.cpu().numpy()
        return out

    for start in range(0, n, chunk_size):
        s = s_all[start : start + chunk_size]
        t = t_all[start : start + chunk_size]
        valid = t >= 0
        st = np.take_along_axis(s, np.maximum(t, 0)[:, None], axis=1)  # [c, 1]
        nan_rows = np.isnan(s.max(axis=1)) & valid     # a row maximum is NaN when the row holds one
        if nan_rows.any():
            _raise_nan_rows(start + np.flatnonzero(nan_rows))
        # 1 + #(s > s_t) + #(s == s_t, j != t) == #(s >= s_t), as s_t is not NaN
        r = np.count_nonzero(s >= st, axis=1)
        out[start : start + len(t)] = np.where(valid, r, OOV_RANK)
    return out


def _raise_nan_rows(rows):
    """ValueError for the rows (of a chunk, offset to the whole matrix) whose scores hold a NaN."""
    raise ValueError(
        f"scores contain NaN in {len(rows)} row{'' if len(rows) == 1 else 's'} with a target (e.g. rows "
        f"{rows[:5].tolist()}; counted in the first chunk that holds one): a NaN compares neither above nor "
        "below the target, so its rank is undefined. Replace NaN scores (e.g. by -inf for masked cells); a "
        "model that scores NaN has diverged."
    )


# --------------------------------------------------------------------------------------------------
# metrics on ranks
# --------------------------------------------------------------------------------------------------
def _check_ranks(ranks) -> np.ndarray:
    """Return ranks as a 1-D float64 array (OOV -> inf), validating them."""
    if _is_torch_tensor(ranks):
        ranks = ranks.detach().cpu().numpy()
    arr = np.asarray(getattr(ranks, "to_numpy", lambda: ranks)())
    if arr.ndim != 1:
        raise ValueError(f"ranks must be 1-D, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(
            "ranks is empty: there are no targets to score. The estimators score the visits of "
            "windows of at least min_stays visits (their parameter, 5 by default) within window_days "
            "days: the frame has no such window; lower min_stays or score longer trajectories."
        )
    if arr.dtype.kind in "iu":
        out = arr.astype(np.float64)
        out[arr == OOV_RANK] = np.inf
    elif arr.dtype.kind == "f":
        out = arr.astype(np.float64)
        if np.isnan(out).any():
            raise ValueError(
                f"ranks contain {int(np.isnan(out).sum())} NaN values; use trajmoe.metrics.OOV_RANK "
                "(or inf) for out-of-vocabulary targets."
            )
        finite = np.isfinite(out)
        if (out[finite] != np.round(out[finite])).any():
            raise ValueError("ranks must be whole numbers (1-based positions).")
        out[out >= OOV_RANK] = np.inf
    else:
        raise ValueError(f"ranks must be integers (1-based), got dtype {arr.dtype}.")
    if (out < 1).any():
        bad = arr[out < 1]
        raise ValueError(
            f"ranks are 1-based and must be >= 1; {len(bad)} are not, e.g. {bad[:5].tolist()}."
        )
    return out


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    return int(k)


def accuracy_at_k(ranks, k):
    """Acc@k: fraction of targets ranked in the top ``k``.

    Parameters
    ----------
    ranks : array-like of shape (n_targets,), int
        1-based ranks as returned by :func:`target_ranks` (or an estimator's ``target_ranks``);
        :data:`OOV_RANK` (or ``inf``) marks an out-of-vocabulary target, a miss for every ``k``.
    k : int
        Cut-off, ``k >= 1``.

    Returns
    -------
    float
        ``mean(ranks <= k)``, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``ranks`` is empty, not 1-D, contains NaN or values < 1, or ``k`` is not a positive
        integer.

    References
    ----------
    .. [1] arXiv:2505.18670; user guide, section "Evaluation protocols".

    Examples
    --------
    >>> accuracy_at_k([1, 2, 4, OOV_RANK], k=1)
    0.25
    >>> accuracy_at_k([1, 2, 4, OOV_RANK], k=3)
    0.5
    """
    r = _check_ranks(ranks)
    k = _check_k(k)
    return float(np.mean(r <= k))


def mean_reciprocal_rank(ranks):
    """MRR: mean of ``1 / rank`` over targets (full ranking, no cut-off).

    Parameters
    ----------
    ranks : array-like of shape (n_targets,), int
        1-based ranks; :data:`OOV_RANK` (or ``inf``) contributes exactly 0.

    Returns
    -------
    float
        Mean reciprocal rank in ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``ranks`` is empty, not 1-D, or contains NaN or values < 1.

    References
    ----------
    .. [1] arXiv:2505.18670; user guide, section "Evaluation protocols".

    Examples
    --------
    >>> mean_reciprocal_rank([1, 2, 4, OOV_RANK])
    0.4375
    """
    r = np.sort(_check_ranks(ranks))      # summed in one order: the same mean whatever the targets' order
    return float(np.mean(1.0 / r))


def ndcg_at_k(ranks, k):
    """NDCG@k with a single relevant item (the true next cell).

    Parameters
    ----------
    ranks : array-like of shape (n_targets,), int
        1-based ranks; :data:`OOV_RANK` (or ``inf``) contributes exactly 0.
    k : int
        Cut-off, ``k >= 1``.

    Returns
    -------
    float
        Mean over targets of ``1 / log2(rank + 1)`` if ``rank <= k`` else 0 (the ideal DCG of a
        single relevant item is 1), in ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``ranks`` is empty, not 1-D, contains NaN or values < 1, or ``k`` is not a positive
        integer.

    References
    ----------
    .. [1] Jarvelin, Kekalainen. "Cumulated gain-based evaluation of IR techniques", ACM TOIS 20(4),
       2002.
    .. [2] arXiv:2505.18670; user guide, section "Evaluation protocols".

    Examples
    --------
    >>> round(ndcg_at_k([1, 2, 4, OOV_RANK], k=10), 6)
    0.515402
    """
    r = np.sort(_check_ranks(ranks))      # summed in one order: the same mean whatever the targets' order
    k = _check_k(k)
    hit = r <= k
    gains = np.zeros_like(r)
    gains[hit] = 1.0 / np.log2(r[hit] + 1.0)
    return float(np.mean(gains))


def _check_ks(ks) -> tuple[int, ...]:
    if isinstance(ks, numbers.Integral):
        ks = (ks,)
    if isinstance(ks, (str, bytes, dict)) or not hasattr(ks, "__iter__"):
        raise ValueError(f"ks must be a sequence of cut-offs (ints >= 1), e.g. (1, 5, 10), got {ks!r}.")
    ks = tuple(_check_k(k) for k in ks)
    if not ks:
        raise ValueError("ks must contain at least one cut-off.")
    return tuple(sorted(set(ks)))


#: Kinds of target of :meth:`trajmoe.estimators.NextLocationEstimator.target_table` and :func:`ranking_report`, in the
#: order their metrics are reported.
KINDS: tuple[str, ...] = ("return", "explore")


def _metrics_of(r: np.ndarray, ks: tuple[int, ...], suffix: str = "") -> dict:
    """Acc@k, MRR and NDCG@k of checked float ranks (inf = OOV); NaN for every metric if empty."""
    out: dict = {}
    r = np.sort(r)                        # summed in one order: the same means whatever the targets' order
    empty = r.size == 0
    for k in ks:
        out[f"acc@{k}{suffix}"] = np.nan if empty else float(np.mean(r <= k))
    out[f"mrr{suffix}"] = np.nan if empty else float(np.mean(1.0 / r))
    for k in ks:
        if empty:
            out[f"ndcg@{k}{suffix}"] = np.nan
            continue
        hit = r <= k
        gains = np.zeros_like(r)
        gains[hit] = 1.0 / np.log2(r[hit] + 1.0)
        out[f"ndcg@{k}{suffix}"] = float(np.mean(gains))
    return out


def _as_1d(values, name: str, n: int) -> np.ndarray:
    if _is_torch_tensor(values):
        values = values.detach().cpu().numpy()
    arr = np.asarray(getattr(values, "to_numpy", lambda: values)())
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name} must be 1-D with one value per rank ({n}), got shape {arr.shape}."
        )
    return arr


def _check_kind(kind, n: int) -> np.ndarray:
    """``kind`` as a boolean array: True for "return", False for "explore"."""
    arr = _as_1d(kind, "kind", n).astype(object)
    is_return = np.asarray(arr == "return", dtype=bool)
    is_explore = np.asarray(arr == "explore", dtype=bool)
    bad = ~(is_return | is_explore)
    if bad.any():
        raise ValueError(
            f"kind must hold only 'return' or 'explore'; {int(bad.sum())} values do not, e.g. "
            f"{arr[bad][:5].tolist()}."
        )
    return is_return


def _check_oov(oov, n: int) -> np.ndarray:
    arr = _as_1d(oov, "oov", n)
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind in "iu" and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise ValueError(
        f"oov must be booleans (True = out-of-vocabulary target), got dtype {arr.dtype}."
    )


def ranking_report(ranks, ks=(1, 3, 5, 10), kind=None, oov=None):
    """All ranking metrics of a set of targets in one dict, optionally split into returns and
    explorations.

    Parameters
    ----------
    ranks : array-like of shape (n_targets,), int
        1-based ranks (:data:`OOV_RANK` or ``inf`` = out-of-vocabulary target, counted as a miss
        and as 0 in MRR and NDCG).
    ks : sequence of int, default (1, 3, 5, 10)
        Cut-offs for Acc@k and NDCG@k.
    kind : array-like of shape (n_targets,), str, optional
        ``"return"`` where the true next cell was already visited earlier in the same evaluation
        window (the current visit included), ``"explore"`` where it is a new cell; e.g. the
        ``kind`` column of an estimator's ``target_table``. When given, the report also holds
        the share of each kind and every metric on each kind separately.
    oov : array-like of shape (n_targets,), bool, optional
        True where the true next cell is outside the fitted vocabulary of its city (the ``oov``
        column of ``target_table``; with the open vocabulary such a cell is scored on the fly and
        may have a finite rank, while a target that is no candidate at all has rank
        :data:`OOV_RANK`). When given, the report also holds ``oov_share``.

    Returns
    -------
    dict
        ``{"acc@1": float, ..., "acc@10": float, "mrr": float, "ndcg@1": float, ...,
        "ndcg@10": float, "n_targets": int}`` with one ``acc@k`` and ``ndcg@k`` per ``k`` of
        ``ks`` (ascending). With ``kind``, then ``"return_share"`` and ``"explore_share"`` (floats
        in ``[0, 1]``, summing to 1) and the same metrics on each part, suffixed
        ``_return`` then ``_explore`` (``"acc@1_return"``, ..., ``"mrr_return"``, ...,
        ``"ndcg@10_explore"``); the metrics of an empty part are NaN. With ``oov``, then
        ``"oov_share"`` (float in ``[0, 1]``).

    Raises
    ------
    ValueError
        As :func:`accuracy_at_k`; also if ``ks`` is not a non-empty sequence of cut-offs,
        ``kind`` holds a value other than ``"return"``/``"explore"``, ``oov`` is not boolean, or
        ``kind``/``oov`` do not have one value per rank.

    See Also
    --------
    evaluate : The report of a fitted estimator on a visit frame.

    Notes
    -----
    On public check-in and GPS data about half of all targets are returns, on which a copy of the
    user's history is hard to beat; the split shows whether a model gains on returns, on
    explorations, or only on the mix.

    References
    ----------
    .. [1] arXiv:2505.18670; user guide, section "Evaluation protocols".
    .. [2] User guide, section "The copy path (option)": about half of all next visits are a cell
       already visited earlier in the same window.

    Examples
    --------
    >>> rep = ranking_report([1, 2, 4, OOV_RANK], ks=(1, 3))
    >>> rep["acc@1"], rep["acc@3"], rep["mrr"], rep["n_targets"]
    (0.25, 0.5, 0.4375, 4)
    >>> rep = ranking_report([1, 2, 4, OOV_RANK], ks=(1, 3),
    ...                      kind=["return", "return", "explore", "explore"],
    ...                      oov=[False, False, False, True])
    >>> rep["return_share"], rep["acc@1_return"], rep["mrr_return"]
    (0.5, 0.5, 0.75)
    >>> rep["explore_share"], rep["acc@3_explore"], rep["mrr_explore"], rep["oov_share"]
    (0.5, 0.0, 0.125, 0.25)
    """
    r = _check_ranks(ranks)
    ks = _check_ks(ks)
    is_return = None if kind is None else _check_kind(kind, r.size)
    is_oov = None if oov is None else _check_oov(oov, r.size)
    report = _metrics_of(r, ks)
    report["n_targets"] = int(r.size)
    if is_return is not None:
        report["return_share"] = float(np.mean(is_return))
        report["explore_share"] = float(np.mean(~is_return))
        report.update(_metrics_of(r[is_return], ks, "_return"))
        report.update(_metrics_of(r[~is_return], ks, "_explore"))
    if is_oov is not None:
        report["oov_share"] = float(np.mean(is_oov))
    return report


def _estimator_ranks(estimator, X, protocol, pois=None):
    if not hasattr(estimator, "target_ranks"):
        raise TypeError(
            f"{type(estimator).__name__} has no target_ranks(X, protocol=...) method; trajmoe "
            "metrics need an estimator that ranks the true next location of each target visit."
        )
    # pois only when given: an estimator of another library need not take them
    return estimator.target_ranks(X, protocol=protocol, **({} if pois is None else {"pois": pois}))


def evaluate(estimator, X, protocol="all", ks=(1, 3, 5, 10), pois=None):
    """Score a fitted estimator on a visit frame with every ranking metric, on all targets and
    separately on returns and explorations.

    Parameters
    ----------
    estimator : fitted estimator
        Implements ``target_table(X, protocol=...) -> pandas.DataFrame`` with columns ``rank``
        (int64), ``kind`` (``"return"``/``"explore"``) and ``oov`` (bool), as every
        :class:`trajmoe.estimators.NextLocationEstimator` does; or at least
        ``target_ranks(X, protocol=...) -> pandas.Series`` of 1-based ranks (one per target
        visit, see the module docstring), in which case the report has no split.
    X : DataFrame of shape (n_visits, n_columns)
        Canonical visit frame of the evaluation users (see ``trajmoe.schema``).
    protocol : {"all", "last"}, default "all"
        ``"all"``: every position with a next visit in the same evaluation window;
        ``"last"``: only the last target of each evaluation window.
    ks : sequence of int, default (1, 3, 5, 10)
        Cut-offs for Acc@k and NDCG@k.
    pois : DataFrame of shape (n_pois, n_columns), optional
        POIs of the cities of X the estimator was not fitted on, passed to its ``target_table``
        (or ``target_ranks``): their zero-shot features, as in ``estimator.score(X, pois=pois)``.

    Returns
    -------
    dict
        As :func:`ranking_report`: ``acc@k``, ``mrr``, ``ndcg@k`` (floats) and ``n_targets``
        (int); with ``target_table`` also ``return_share``, ``explore_share``, every metric
        suffixed ``_return`` and ``_explore`` (NaN for an empty part) and ``oov_share``.

    Raises
    ------
    ValueError
        If ``protocol`` is unknown, or the estimator returns no targets / invalid ranks.
    TypeError
        If the estimator has neither ``target_table`` nor ``target_ranks``.

    See Also
    --------
    ranking_report : The same report from ranks (and kinds) already computed.

    References
    ----------
    .. [1] arXiv:2505.18670; user guide, section "Evaluation protocols" (both
       protocols, full ranking).
    .. [2] User guide, section "The copy path (option)": about half of all next visits are a cell
       already visited earlier in the same window, hence the split into returns and explorations.
    """
    protocol = check_protocol(protocol)
    ks = _check_ks(ks)
    if hasattr(estimator, "target_table"):
        table = estimator.target_table(X, protocol=protocol, **({} if pois is None else {"pois": pois}))
        return ranking_report(table["rank"], ks=ks, kind=table.get("kind"), oov=table.get("oov"))
    return ranking_report(_estimator_ranks(estimator, X, protocol, pois), ks=ks)

# --------------------------------------------------------------------------------------------------
# scikit-learn scorers
# --------------------------------------------------------------------------------------------------
_METRICS = {
    "acc": accuracy_at_k,
    "ndcg": ndcg_at_k,
    "mrr": mean_reciprocal_rank,
}


class _RankScorer:
    """Callable ``(estimator, X, y=None) -> float`` computing one ranking metric.

    Picklable (module-level class) so it works with ``n_jobs`` in scikit-learn's model selection.
    """

    def __init__(self, metric: str, k: int | None = None, protocol: str = "all"):
        self.metric = metric
        self.k = k
        self.protocol = protocol

    @property
    def name(self) -> str:
        return self.metric if self.k is None else f"{self.metric}@{self.k}"

    def __call__(self, estimator, X, y=None, **kwargs) -> float:
        """Return the metric of ``estimator`` on ``X`` (``y`` is ignored: targets come from X).

        ``pois`` (routed metadata, e.g. ``cross_validate(..., params={"pois": pois})``) go to
        ``estimator.target_ranks``, as :meth:`trajmoe.estimators.NextLocationEstimator.score` takes them; any other
        keyword raises a TypeError (it would change nothing).
        """
        unknown = sorted(set(kwargs) - {"pois"})
        if unknown:
            raise TypeError(f"{self!r} takes the metadata pois only, got {unknown}.")
        ranks = _estimator_ranks(estimator, X, self.protocol, kwargs.get("pois"))
        func = _METRICS[self.metric]
        return func(ranks) if self.k is None else func(ranks, self.k)

    def get_metadata_routing(self):
        """scikit-learn's metadata routing: the scorer asks for ``pois`` (when routing is enabled,
        ``cross_validate(..., params={"pois": pois})`` passes them on, as to ``score``).

        Returns
        -------
        sklearn.utils.metadata_routing.MetadataRequest
        """
        from sklearn.utils.metadata_routing import MetadataRequest

        request = MetadataRequest(owner=type(self).__name__)
        request.score.add_request(param="pois", alias=True)
        return request

    def __repr__(self) -> str:
        return f"trajmoe_scorer({self.name!r}, protocol={self.protocol!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, _RankScorer) and (self.metric, self.k, self.protocol) == (
            other.metric,
            other.k,
            other.protocol,
        )

    def __hash__(self) -> int:
        return hash((self.metric, self.k, self.protocol))


def acc_at_k_scorer(k, protocol="all"):
    """Scikit-learn scorer for Acc@k.

    Parameters
    ----------
    k : int
        Cut-off, ``k >= 1``.
    protocol : {"all", "last"}, default "all"
        Evaluation protocol passed to ``estimator.target_ranks``.

    Returns
    -------
    callable
        ``scorer(estimator, X, y=None) -> float`` (higher is better), usable as ``scoring=`` in
        :func:`sklearn.model_selection.cross_val_score` or ``GridSearchCV``.

    Raises
    ------
    ValueError
        If ``k`` is not a positive integer or ``protocol`` is unknown.

    References
    ----------
    .. [1] arXiv:2505.18670; user guide, section "Evaluation protocols".
    """
    return _RankScorer("acc", _check_k(k), check_protocol(protocol))


def ndcg_scorer(k, protocol="all"):
    """Scikit-learn scorer for NDCG@k (single relevant item).

    Parameters
    ----------
    k : int
        Cut-off, ``k >= 1``.
    protocol : {"all", "last"}, default "all"
        Evaluation protocol passed to ``estimator.target_ranks``.

    Returns
    -------
    callable
        ``scorer(estimator, X, y=None) -> float`` (higher is better).

    Raises
    ------
    ValueError
        If ``k`` is not a positive integer or ``protocol`` is unknown.

    References
    ----------
    .. [1] arXiv:2505.18670; user guide, section "Evaluation protocols".
    """
    return _RankScorer("ndcg", _check_k(k), check_protocol(protocol))


#: Scikit-learn scorer for the mean reciprocal rank, protocol ``"all"``: a callable
#: ``(estimator, X, y=None) -> float``. Use ``get_scorer("mrr", protocol="last")`` for the other
#: protocol.
mrr_scorer = _RankScorer("mrr", None, "all")

def get_scorer(name, protocol="all"):
    """Scorer by name.

    Parameters
    ----------
    name : str
        ``"acc@k"`` (e.g. ``"acc@1"`` .. ``"acc@10"``), ``"mrr"`` or ``"ndcg@k"`` (e.g.
        ``"ndcg@10"``), for any integer ``k >= 1``; case-insensitive. A ``"_last"`` suffix
        (``"mrr_last"``, the names of :data:`SCORER_NAMES`) asks for protocol ``"last"``
        whatever ``protocol`` says.
    protocol : {"all", "last"}, default "all"
        Evaluation protocol passed to ``estimator.target_ranks``.

    Returns
    -------
    callable
        ``scorer(estimator, X, y=None) -> float`` (higher is better), usable as ``scoring=`` in
        scikit-learn's model selection tools.

    Raises
    ------
    ValueError
        If the name is not a known metric or ``protocol`` is unknown.

    References
    ----------
    .. [1] arXiv:2505.18670; user guide, section "Evaluation protocols".

    Examples
    --------
    >>> get_scorer("acc@5")
    trajmoe_scorer('acc@5', protocol='all')
    >>> get_scorer("mrr_last")
    trajmoe_scorer('mrr', protocol='last')
    """
    check_protocol(protocol)
    if isinstance(name, str) and name.lower().endswith("_last"):
        name, protocol = name[:-len("_last")], "last"
    metric, k = parse_metric_name(name)
    return _RankScorer(metric, k, protocol)


#: Scorer names registered with scikit-learn (usable as ``scoring="mrr"``; see the module notes).
SCORER_NAMES = tuple(f"{name}{suffix}" for suffix in ("", "_last")
                     for name in ("mrr", *(f"{m}@{k}" for m in ("acc", "ndcg") for k in (1, 3, 5, 10, 20))))


def register_scorers():
    """Register the scorers of :data:`SCORER_NAMES` with scikit-learn (done on import).

    Afterwards ``scoring="acc@1"`` (or any name of the list, alone, in a list or in a dict) works
    in :func:`~sklearn.model_selection.cross_val_score`,
    :func:`~sklearn.model_selection.cross_validate`, ``GridSearchCV`` and
    :func:`sklearn.metrics.get_scorer`. A name scikit-learn already knows is left as it is.
    Calling it again does nothing.

    Returns
    -------
    tuple of str
        The names registered.

    Notes
    -----
    scikit-learn has no public way to add a scorer name. This adds the names to its registry
    (``sklearn.metrics._scorer._SCORERS``, the dict :func:`sklearn.metrics.get_scorer` reads) and
    to the sets of scorer names that its parameter validation built from that registry when its
    modules were imported (``StrOptions(set(get_scorer_names()))`` of ``scoring=`` in
    ``GridSearchCV``, ``cross_val_score``, ...); modules imported later build them with the names.
    """
    import gc

    from sklearn.metrics import _scorer    # scikit-learn's registry of scorer names
    from sklearn.utils._param_validation import StrOptions

    for name in SCORER_NAMES:
        metric, protocol = (name[:-len("_last")], "last") if name.endswith("_last") else (name, "all")
        _scorer._SCORERS.setdefault(name, get_scorer(metric, protocol=protocol))
    for obj in gc.get_objects():
        if type(obj) is StrOptions and {"accuracy", "neg_mean_squared_error"} <= obj.options:
            obj.options.update(SCORER_NAMES)
    return SCORER_NAMES


register_scorers()
