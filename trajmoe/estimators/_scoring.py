"""Top-k and ranks of score rows, in bounded memory.

Every estimator turns the scores of a token's candidate cells into the same two things: its top k
cells (:meth:`NextLocationEstimator.predict_topk`) and the rank of its true next cell
(:meth:`NextLocationEstimator.target_ranks`). This module does both on one block of score rows at
a time, so that the caller never holds more than a block (see :func:`rank_blocks`).

Tie rule of the top k (that of ``numpy.argsort(-scores, kind="stable")``, kept from the first
releases): cells are ordered by score, descending, and cells of equal score by location id,
ascending; at the k-th place, the tied cells with the lowest ids are kept. Ranks are pessimistic
(:func:`trajmoe.metrics.target_ranks`): ``1 + #(other cells scoring >= the truth)``.
"""

from __future__ import annotations

import numpy as np

from .. import metrics

__all__ = ["dense_reference", "rank_blocks", "rank_sparse", "topk_lowest_id"]

#: Score entries (tokens x cells) computed and ranked at once (16 MB of float32): the peak memory of
#: scoring is a few times this, whatever the number of cells (:func:`rank_blocks`, the neural
#: estimators' scoring and their ``valid_ranking`` callback).
SCORE_BLOCK = 1 << 22


def topk_lowest_id(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best cells of every row, ties going to the lowest location id.

    Equal to ``ids = argsort(-scores, stable)[:, :k]`` and ``scores[ids]`` for scores without
    NaN, at the cost of one :func:`torch.topk` and a few comparisons instead of a full sort (for
    ``k = 1``, of a row maximum: :meth:`torch.Tensor.max` returns the first maximum of a row).

    Parameters
    ----------
    scores : Tensor of shape (n, N), float
        Scores of the N cells (higher is better); no NaN.
    k : int
        Cells wanted; at most N are returned.

    Returns
    -------
    values : Tensor of shape (n, min(k, N))
        Scores of the chosen cells, best first.
    ids : LongTensor of shape (n, min(k, N))
        Their location ids (columns of ``scores``).

    Raises
    ------
    ValueError
        If a row holds a NaN (it ranks neither above nor below another score: a model that
        scores NaN has diverged). :func:`torch.topk` and :meth:`torch.Tensor.max` rank a NaN
        first, so the check reads the best value of each row only.

    Examples
    --------
    >>> import torch
    >>> topk_lowest_id(torch.tensor([[0.0, 2.0, 1.0, 2.0, 1.0]]), 3)[1].tolist()
    [[1, 3, 2]]
    """
    import torch  # loaded on first use: importing the counting baselines stays torch-free
    k = min(int(k), scores.shape[1])
    if k == 0 or not len(scores):
        return scores[:, :k], torch.zeros(scores.shape[0], k, dtype=torch.long, device=scores.device)
    if k == 1:
        # the first maximum of a row (torch.max's documented choice) is the lowest id among ties
        values, ids = scores.max(dim=1, keepdim=True)
        _check_no_nan(values[:, 0])
        return values, ids
    # one more than asked: where the (k+1)-th score is below the k-th, every cell tied with the
    # k-th is in the top k; elsewhere topk may have kept other tied cells than the lowest ids
    values, ids = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)
    _check_no_nan(values[:, 0])
    suspect = values[:, k:].eq(values[:, k - 1:k]).any(1)
    values, ids = values[:, :k], ids[:, :k]
    kth = values[:, -1:]
    n_kept = (values == kth).sum(1)
    partial = suspect
    if bool(suspect.any()):
        rows = suspect.nonzero()[:, 0]
        partial = torch.zeros_like(suspect)
        partial[rows] = (scores[rows] == kth[rows]).sum(1) > n_kept[rows]
    if bool(partial.any()):
        rows = partial.nonzero()[:, 0]
        s, t = scores[rows], kth[rows]
        tied = s == t
        keep = (s > t) | (tied & (tied.cumsum(1) <= n_kept[rows, None]))      # exactly k a row
        chosen = keep.nonzero()[:, 1].view(len(rows), k)                       # ascending ids
        ids[rows] = chosen
        values[rows] = s.gather(1, chosen)
    # best first; equal scores by ascending id
    by_id = ids.argsort(dim=1)
    ids, values = ids.gather(1, by_id), values.gather(1, by_id)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), ids.gather(1, order)


def _check_no_nan(best):
    """ValueError where the best score of a row (``best``, shape (n,)) is NaN."""
    import torch
    nan = torch.isnan(best)
    if bool(nan.any()):
        rows = nan.nonzero()[:, 0]
        raise ValueError(
            f"scores contain NaN in {len(rows)} row{'' if len(rows) == 1 else 's'} (e.g. rows {rows[:5].tolist()} "
            "of a block of tokens): a NaN ranks neither above nor below another score, so the best cells are "
            "undefined. A model that scores NaN has diverged: refit it (e.g. with a lower learning rate) or "
            "load weights without NaN.")


def rank_blocks(score_rows, n, n_cells, k=None, truth=None, block=SCORE_BLOCK):
    """Top-k cells and ranks of n tokens, scoring a block of them at a time.

    Parameters
    ----------
    score_rows : callable
        ``score_rows(index) -> scores`` of the tokens ``index`` (ndarray of int64), shape
        (len(index), n_cells), ndarray or Tensor.
    n : int
        Number of tokens.
    n_cells : int
        Number of candidate cells N.
    k : int or None
        Top cells wanted per token; None: none (then only tokens with a truth are scored).
    truth : ndarray of int64 of shape (n,) or None
        True next cell per token: 0..N-1, -1 outside the vocabulary (rank
        :data:`trajmoe.metrics.OOV_RANK`), -2 no target (rank 0, not computed); None: no ranks.
    block : int, default :data:`SCORE_BLOCK`
        Score entries held at once (at least one token).

    Returns
    -------
    ids : ndarray of int64 of shape (n, min(k, N)) or None
    values : ndarray of float64 of shape (n, min(k, N)) or None
    ranks : ndarray of int64 of shape (n,) or None
    """
    import torch  # loaded on first use: importing the counting baselines stays torch-free
    kk = None if k is None else min(int(k), n_cells)
    ids = None if k is None else np.zeros((n, kk), np.int64)
    values = None if k is None else np.full((n, kk), -np.inf)
    ranks = None if truth is None else np.zeros(n, np.int64)
    wanted = np.arange(n) if k is not None or truth is None else np.flatnonzero(truth >= -1)
    step = max(1, block // max(n_cells, 1))
    for start in range(0, len(wanted), step):
        index = wanted[start:start + step]
        scores = score_rows(index)
        scores = scores if torch.is_tensor(scores) else torch.from_numpy(np.ascontiguousarray(scores))
        if k is not None:
            top_values, top_ids = topk_lowest_id(scores, kk)
            ids[index], values[index] = top_ids.cpu().numpy(), top_values.double().cpu().numpy()
        if truth is not None:
            ranked = truth[index] >= -1
            if ranked.all():
                ranks[index] = metrics.target_ranks(scores, truth[index])
            elif ranked.any():
                mask = torch.as_tensor(ranked, device=scores.device)
                ranks[index[ranked]] = metrics.target_ranks(scores[mask], truth[index[ranked]])
    return ids, values, ranks


def rank_sparse(base, row_of, token, cell, value, k=None, truth=None, sorted_base=None):
    """Top-k cells and ranks when every token's scores are a base row with a few cells changed.

    The scores of token ``i`` are ``base[row_of[i]]``, except at the cells of its entries
    (``token == i``), which score ``value`` instead: popularity with a user's history, or a
    gravity row of the current cell with its mixture of returns. Only the top ``k + m`` cells
    of every base row (m: most entries of a token) and the entries are ordered, never a row of
    every cell per token; the results are those of the dense matrix (:func:`rank_blocks`).

    Parameters
    ----------
    base : ndarray of float64, shape (R, N)
        Base rows.
    row_of : ndarray of int64, shape (n,)
        Base row of every token.
    token, cell : ndarray of int64, shape (n_entries,)
        Token and cell of every entry; one entry at most per (token, cell).
    value : ndarray of float64, shape (n_entries,)
        Score of the entry's cell for its token.
    k : int or None
        Top cells wanted per token; None: none.
    truth : ndarray of int64, shape (n,), or None
        As in :func:`rank_blocks` (-1 outside the vocabulary, -2 no target).
    sorted_base : ndarray of float64, shape (N,), optional
        ``np.sort(base[0])`` when R == 1 (computed here when not given).

    Returns
    -------
    ids, values, ranks
        As :func:`rank_blocks`.
    """
    import torch  # loaded on first use: importing the counting baselines stays torch-free
    n, (n_rows, n_cells) = len(row_of), base.shape
    entries = np.argsort(token, kind="stable")
    token, cell, value = token[entries], cell[entries], value[entries]
    per_token = np.bincount(token, minlength=n)
    ids = values = ranks = None
    if k is not None:
        kk = min(int(k), n_cells)
        width = int(per_token.max()) if n else 0
        g = min(n_cells, kk + width)
        top_values, top_ids = topk_lowest_id(torch.from_numpy(base), g)
        top_values, top_ids = top_values.numpy()[row_of], top_ids.numpy()[row_of]       # (n, g)
        # a cell among the entries of its token leaves the base part
        e_top = top_ids[token]
        hit_entry, hit_col = np.nonzero(e_top == cell[:, None])
        top_values[token[hit_entry], hit_col] = -np.inf
        top_ids[token[hit_entry], hit_col] = n_cells            # fillers sort after every cell
        slot = np.arange(len(token)) - np.repeat(np.cumsum(per_token) - per_token, per_token)
        entry_ids = np.full((n, width), n_cells, np.int64)
        entry_values = np.full((n, width), -np.inf)
        entry_ids[token, slot], entry_values[token, slot] = cell, value
        cand_ids = np.concatenate([entry_ids, top_ids], axis=1)
        cand_values = np.concatenate([entry_values, top_values], axis=1)
        order = np.lexsort((cand_ids, -cand_values), axis=1)[:, :kk]     # score down, then id up
        ids, values = np.take_along_axis(cand_ids, order, 1), np.take_along_axis(cand_values, order, 1)
    if truth is not None:
        ranks = np.zeros(n, np.int64)
        ranked = truth >= 0
        known = np.flatnonzero(ranked)
        v = np.full(n, np.inf)
        v[known] = base[row_of[known], truth[known]]
        is_truth = cell == truth[token]
        v[token[is_truth]] = value[is_truth]
        # cells of the base row scoring >= the truth, then the entries in place of their base scores
        if n_rows == 1:
            sorted_base = np.sort(base[0]) if sorted_base is None else sorted_base
            ranks[known] = n_cells - np.searchsorted(sorted_base, v[known], side="left")
        else:
            step = max(1, SCORE_BLOCK // max(n_cells, 1))
            for r in np.unique(row_of[known]):
                group = known[row_of[known] == r]
                for a in range(0, len(group), step):
                    part = group[a:a + step]
                    ranks[part] = (base[r][None, :] >= v[part, None]).sum(axis=1)
        base_entry = base[row_of[token], cell]
        change = (value >= v[token]).astype(np.int64) - (base_entry >= v[token])
        ranks += np.bincount(token, change, minlength=n).astype(np.int64)
        ranks[~ranked] = 0
        ranks[truth == -1] = metrics.OOV_RANK
    return ids, values, ranks


def dense_reference(model, X, k=10, protocol="all"):
    """Top k and target table of a fitted estimator as scored before the scoring was bounded.

    Every batch of windows (``_iter_batches``) is scored as a dense (tokens x cells) matrix by
    ``model._batch_scores``; the top k is a stable argsort of the negated scores, ranks
    are :func:`trajmoe.metrics.target_ranks`, and top-k and ranks are two passes. Kept as the
    reference the fast paths are tested and benchmarked against.

    Parameters
    ----------
    model : fitted NextLocationEstimator
    X : DataFrame
        Canonical visit frame.
    k : int, default 10
    protocol : {"all", "last"}, default "all"

    Returns
    -------
    labels : ndarray of object, shape (n_visits, k)
    values : ndarray of float64, shape (n_visits, k)
    table : DataFrame
        As :meth:`NextLocationEstimator.target_table`.
    """
    from ..encoder import cell_labels

    n_fitted = model._n_locations()
    with model._unseen_cells(X):
        prep, windows = model._visit_windows(X)
        labels = np.empty((len(prep.order), k), dtype=object)
        values = np.full((len(prep.order), k), -np.inf)
        for c, rows, _, scores in model._iter_scores(windows):
            ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            cells = model.encoder_.cities_[model.cities_[c]].cells
            labels[prep.order[rows], :ids.shape[1]] = cell_labels(model.cities_[c], cells[ids.ravel(), 0],
                                                                  cells[ids.ravel(), 1]).reshape(ids.shape)
            values[prep.order[rows], :ids.shape[1]] = np.take_along_axis(scores, ids, 1)
        evaluated, truth = model._evaluation_targets(prep, protocol)
        ranks = np.zeros(len(prep.order), np.int64)
        for _, rows, targets, scores in model._iter_scores(evaluated):
            has = targets >= 0
            ranks[rows[has]] = metrics.target_ranks(scores[has], prep.location[targets[has]])
        table = model._table(X, prep, evaluated, truth, ranks, n_fitted)
    return labels, values, table
