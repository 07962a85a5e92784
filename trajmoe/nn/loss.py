"""Location scoring and the training loss (docs/method.rst, "The SAMoE network" and "Copy path and rule priors").

Scores of a position over its city's ``N`` cells are only ever materialised for selected positions
(``[n, N]``), never for the whole batch (``[B, L, N]``); the loss avoids even most of those.

With the copy path, the next-location distribution is the pointer-generator mixture

.. math:: p(c) = g \\, \\mathrm{softmax}(q \\cdot C^\\top)_c + (1 - g) \\sum_{j: x_j = c} a_j,
   \\qquad a = \\mathrm{softmax}_j(s_j),

where ``g`` is the model's generation gate, ``s`` its copy scores over the history and ``x_j`` the
input cell at history position ``j``.

References
----------
.. [1] Han et al., arXiv 2505.18670 (TrajMoE / MoveGPT), section "SAMoE Transformer" (head, loss).
.. [2] See, Liu, Manning. "Get To The Point: Summarization with Pointer-Generator Networks", 2017.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._constants import IGNORE_INDEX
from .retrieval import add_distance_prior, dense_entries, first_occurrence, history_terms

#: Floor of the gate probabilities inside logarithms (keeps gradients finite at saturation).
_EPS = 1e-12


def location_log_probs(out: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the city's cells for selected positions.

    Parameters
    ----------
    out : dict
        Output of :meth:`SAMoETransformer.forward` (keys ``"query"``, ``"candidates"`` and, for the
        copy path, ``"copy_scores"``, ``"gate"``, ``"location"``).
    rows, cols : LongTensor [n]
        Batch index and position index of each selected position.

    Returns
    -------
    FloatTensor [n, N]
        ``log_softmax(q . C^T)`` without copy path; otherwise
        ``log(g softmax(q . C^T) + (1 - g) p_copy)``, where ``p_copy`` scatters the softmax of the
        copy scores onto the history cells. Every row log-sum-exps to 0.
    """
    log_generate = torch.log_softmax(generation_logits(out, rows, cols), dim=-1)
    if out.get("copy_scores") is None:
        return log_generate
    n_locations = out["candidates"].shape[0]
    weights, ids = _copy_weights(out, rows, cols, n_locations)
    gate = out["gate"][rows, cols].unsqueeze(-1)
    # a cell outside the history has p_copy = 0: the mixture is log(g) + log_generate, exactly
    log_probs = gate.clamp_min(_EPS).log() + log_generate
    # the copy mass of each history cell (at most L a row), summed in history order
    first = first_occurrence(ids)
    p_copy = weights.new_zeros(weights.shape).scatter_add_(1, first, weights).gather(1, first)
    copied = (ids < n_locations) & (first == torch.arange(ids.shape[1], device=ids.device))   # once a cell
    mixed = _mix(gate, log_generate.gather(1, ids.clamp(max=n_locations - 1)), p_copy)
    return _put(log_probs, ids, copied, mixed)


def ranking_scores(out: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Scores that order the city's cells as :func:`location_log_probs` does, for selected positions.

    Without the copy path the log-probabilities are the logits of :func:`generation_logits`
    shifted by one constant a row (their log-sum-exp), so the logits themselves are returned: the
    same order, the same top k and ranks, without the log-softmax pass over the ``[n, N]``
    scores. With the copy path the mixture is not a shift of the logits, and the
    log-probabilities are returned.

    Parameters
    ----------
    out : dict
    rows, cols : LongTensor [n]
        As in :func:`location_log_probs`.

    Returns
    -------
    FloatTensor [n, N]
        Higher is better. Two logits closer than the float32 rounding of their log-softmax can
        share one log-probability and stay apart here: a pessimistic rank (ties counted against
        the target, :func:`trajmoe.metrics.target_ranks`) is then lower than on the
        log-probabilities (docs: Speed on one machine).
    """
    if out.get("copy_scores") is None:
        return generation_logits(out, rows, cols)
    return location_log_probs(out, rows, cols)


def dense_location_log_probs(
    out: dict, rows: torch.Tensor, cols: torch.Tensor, normalise: bool = True
) -> torch.Tensor:
    """Reference of :func:`location_log_probs` (and, with ``normalise=False``, of
    :func:`ranking_scores`): the history prior and the copy mixture over every cell of the city
    (``[n, N]`` temporaries), as scored before they were added sparsely.

    Equal to :func:`location_log_probs` bit for bit without the copy path, within the last bit
    of float32 with it; kept for tests and benchmarks.

    Parameters
    ----------
    out : dict
    rows, cols : LongTensor [n]
        As in :func:`location_log_probs`.
    normalise : bool, default True
        False: without the copy path, the logits before the log-softmax.

    Returns
    -------
    FloatTensor [n, N]
    """
    logits = _dense_logits(out, rows, cols)
    if out.get("history") is not None:
        ids, weights, features = history_terms(out, rows, cols, logits.shape[1])
        logits = _add_history(logits, weights.to(logits.dtype), dense_entries(ids, features, logits.shape[1]))
    if not normalise and out.get("copy_scores") is None:
        return logits
    log_generate = torch.log_softmax(logits, dim=-1)
    if out.get("copy_scores") is None:
        return log_generate
    n_locations = out["candidates"].shape[0]
    weights, ids = _copy_weights(out, rows, cols, n_locations)
    p_copy = weights.new_zeros(len(rows), n_locations + 1).scatter_add_(1, ids, weights)
    return _mix(out["gate"][rows, cols].unsqueeze(-1), log_generate, p_copy[:, :n_locations])


def target_log_probs(
    out: dict, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Log-probability of one target cell per selected position.

    Equal to ``location_log_probs(out, rows, cols).gather(1, targets[:, None])[:, 0]`` but lighter:
    only the logits ``[n, N]`` are materialised, the copy part is read off the history ``[n, L]``.
    The generation term is ``-cross_entropy(logits, targets)``, whose fused log-softmax and its
    backward pass over the ``[n, N]`` logits fewer times than ``gather - logsumexp`` (the same
    value within float32 rounding; 1.5x faster forward and backward at ``[1280, 20000]``).

    Parameters
    ----------
    out : dict
        Output of :meth:`SAMoETransformer.forward`.
    rows, cols : LongTensor [n]
        Selected positions.
    targets : LongTensor [n]
        Target cells, 0..N-1.

    Returns
    -------
    FloatTensor [n]
    """
    log_generate = -F.cross_entropy(generation_logits(out, rows, cols), targets, reduction="none")
    if out.get("copy_scores") is None:
        return log_generate
    weights, ids = _copy_weights(out, rows, cols, out["candidates"].shape[0])
    p_copy = (weights * (ids == targets.unsqueeze(-1))).sum(-1)
    return _mix(out["gate"][rows, cols], log_generate, p_copy)


def generation_logits(out: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Logits of the candidate (generation) distribution for selected positions.

    ``q . C^T``, plus the network's per-candidate bias (``"candidate_bias"``), its distance
    prior (``"distance"``: the value of each candidate's distance bucket from the current cell,
    see :func:`trajmoe.nn.retrieval.add_distance_prior`) and its history prior (``"history"``:
    weights of the window's visit counts and recency, see
    :func:`trajmoe.nn.retrieval.history_entries`; and the return scorer's values of the window's cells,
    ``"history_returns"``) where the output has them.

    Parameters
    ----------
    out : dict
        Output of a :class:`~trajmoe.nn.RetrievalNetwork`.
    rows, cols : LongTensor [n]
        Batch index and position index of each selected position.

    Returns
    -------
    FloatTensor [n, N]
    """
    logits = _dense_logits(out, rows, cols)
    if out.get("history") is not None:
        # only the (at most L) cells of the window's history change: the other cells add 0
        ids, weights, features = history_terms(out, rows, cols, logits.shape[1])
        weights = weights.to(logits.dtype)
        visited = ids < logits.shape[1]            # one entry per visited cell
        values = _add_history(logits.gather(1, ids.clamp(max=logits.shape[1] - 1)), weights, features)
        logits = _put(logits, ids, visited, values)
    return logits


def _add_history(scores: torch.Tensor, weights: torch.Tensor, features) -> torch.Tensor:
    """``scores + w_0 count + w_1 recency (+ w_2 moves)``, added in that order (the dense and the
    sparse paths then agree bit for bit); ``weights`` [n, F], each feature [n, M]."""
    for column, feature in enumerate(features):
        scores = scores + weights[:, column:column + 1] * feature
    return scores


def _dense_logits(out: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``q . C^T`` plus the candidate bias and the distance prior: the terms of every cell."""
    query, bias = out["query"][rows, cols], out.get("candidate_bias")
    # one [n, N] tensor, added to in place (the products' backward does not need their output)
    logits = query @ out["candidates"].T if bias is None else torch.addmm(bias, query, out["candidates"].T)
    if out.get("distance") is not None:
        logits = add_distance_prior(logits, out["distance"][rows, cols], out["location"][rows, cols].clamp_min(0),
                                    out["cell_metres"])
    return logits


def _put(scores: torch.Tensor, ids: torch.Tensor, where: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``scores[i, ids[i, j]] = values[i, j]`` where ``where[i, j]`` (ids distinct there), in place
    unless autograd needs the original; ``values`` take the dtype of ``scores`` (under bf16
    autocast the scores' product is bf16, the priors added to them float32)."""
    position = torch.arange(len(ids), device=ids.device).unsqueeze(-1).expand_as(ids)
    index = (position[where], ids[where])
    values = values[where].to(scores.dtype)
    if scores.requires_grad:
        return scores.index_put(index, values)
    return scores.index_put_(index, values)


def _copy_weights(
    out: dict, rows: torch.Tensor, cols: torch.Tensor, n_locations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy attention over the history [n, L] and the cell ids it points to [n, L].

    Masked history entries (score ``-inf``, or not a real cell) get weight 0 and id ``N``; a
    position without any copyable history gets all-zero weights (no NaN, finite gradients).
    """
    scores = out["copy_scores"][rows, cols]
    ids = out["location"][rows]
    valid = torch.isfinite(scores) & (ids >= 0) & (ids < n_locations)
    masked = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
    weights = torch.softmax(masked, dim=-1) * valid
    return weights, ids.masked_fill(~valid, n_locations)


def _mix(gate: torch.Tensor, log_generate: torch.Tensor, p_copy: torch.Tensor) -> torch.Tensor:
    """``log(gate * exp(log_generate) + (1 - gate) * p_copy)``, exact where ``p_copy == 0``."""
    log_copy = torch.where(
        p_copy > 0, p_copy.clamp_min(torch.finfo(p_copy.dtype).tiny).log(), float("-inf")
    )
    return torch.logaddexp(
        gate.clamp_min(_EPS).log() + log_generate, (1 - gate).clamp_min(_EPS).log() + log_copy
    )


class TrajMoELoss(nn.Module):
    """Next-location NLL plus weighted next-gap cross-entropy (docs/method.rst, "The SAMoE network", loss).

    ``loss = mean NLL(next location) + time_weight * mean CE(next gap)``, each averaged over its
    non-ignored positions (teacher forcing: every position is a sample).

    Parameters
    ----------
    time_weight : float, default=1.0
        Weight of the time loss (the reference code: 1, unweighted).

    References
    ----------
    .. [1] Han et al., arXiv 2505.18670: "Loss = CE(location) + CE(time)".
    """

    def __init__(self, time_weight: float = 1.0) -> None:
        super().__init__()
        self.time_weight = time_weight

    def forward(self, y_pred: dict, y_true: dict) -> torch.Tensor:
        """Compute the scalar loss.

        Parameters
        ----------
        y_pred : dict
            Output of :meth:`SAMoETransformer.forward`.
        y_true : dict
            ``"next_location"`` LongTensor [B, L] (0..N-1, ``-100`` = ignore) and ``"next_gap"``
            LongTensor [B, L] (0..95, ``-100`` = ignore).

        Returns
        -------
        FloatTensor []
            Scalar loss; a term without any target contributes 0.

        Raises
        ------
        ValueError
            If a location target is neither ``-100`` nor in 0..N-1.
        """
        rows, cols, targets = location_targets(y_pred, y_true)
        terms = []
        if len(rows):
            terms.append(-target_log_probs(y_pred, rows, cols, targets).mean())
        next_gap = y_true["next_gap"].reshape(-1)
        if (next_gap != IGNORE_INDEX).any():
            time_logits = y_pred["time_logits"].reshape(next_gap.numel(), -1)
            time_loss = F.cross_entropy(time_logits, next_gap, ignore_index=IGNORE_INDEX)
            terms.append(self.time_weight * time_loss)
        if not terms:  # nothing to learn from: a zero that still backpropagates
            return 0.0 * y_pred["query"].sum()
        return sum(terms[1:], terms[0])

    def sums(self, y_pred: dict, y_true: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The two terms of the loss as sums over positions, with their numbers of positions.

        ``forward`` is ``location_sum / n_location + time_weight * time_sum / n_time`` (a term
        without positions left out); data-parallel training divides each rank's sums by the
        numbers of positions of the whole batch (all ranks), so that the averaged gradient is
        exactly the one of the undivided batch (:mod:`trajmoe.nn.parallel`).

        Parameters
        ----------
        y_pred, y_true : dict
            As in :meth:`forward`.

        Returns
        -------
        location_sum : FloatTensor []
            Sum of the next-location NLL over the non-ignored positions (0 with a graph when
            there are none).
        n_location : LongTensor []
        time_sum : FloatTensor []
            Sum of the next-gap cross-entropy (unweighted) over the non-ignored positions.
        n_time : LongTensor []
        """
        rows, cols, targets = location_targets(y_pred, y_true)
        zero = 0.0 * y_pred["query"].sum()
        location_sum = -target_log_probs(y_pred, rows, cols, targets).sum() if len(rows) else zero
        next_gap = y_true["next_gap"].reshape(-1)
        time_logits = y_pred["time_logits"].reshape(next_gap.numel(), -1)
        time_sum = F.cross_entropy(time_logits, next_gap, ignore_index=IGNORE_INDEX, reduction="sum")
        return (location_sum, torch.tensor(len(rows), device=zero.device),
                time_sum, (next_gap != IGNORE_INDEX).sum())


def location_targets(y_pred: dict, y_true: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions with a next-location target, and those targets.

    Parameters
    ----------
    y_pred : dict
        Network output (its ``"candidates"`` [N, d] give the number of cells N).
    y_true : dict
        ``"next_location"`` LongTensor [B, L]: 0..N-1, or ``-100`` (no target).

    Returns
    -------
    rows, cols, targets : LongTensor [n]
        Batch and position index of each of the n positions with a target, and the target.

    Raises
    ------
    ValueError
        If a target is neither ``-100`` nor in 0..N-1, if ``next_location`` or ``next_gap`` is
        not of the batch's shape [B, L], or if a PAD position has a target.
    """
    next_location = y_true["next_location"]
    shape = tuple(y_pred["query"].shape[:2])
    named = [name for name in ("next_location", "next_gap") if name in y_true]
    for name in named:
        if tuple(y_true[name].shape) != shape:
            raise ValueError(f"{name} targets have shape {tuple(y_true[name].shape)}, and the batch {list(shape)} "
                             "(windows, positions): give one target per position of the batch, -100 where there "
                             "is none.")
    pad = (y_pred["location"] < 0 if "location" in y_pred
           else torch.zeros(shape, dtype=torch.bool, device=next_location.device))
    for name in named:
        if bool((pad & (y_true[name] != IGNORE_INDEX)).any()):
            rows = sorted(set((pad & (y_true[name] != IGNORE_INDEX)).nonzero()[:, 0].tolist()))
            raise ValueError(f"{name} has targets at PAD positions (location -1) of the batch's windows {rows[:5]}: "
                             "a padding position has no next visit; mark its target -100.")
    rows, cols = (next_location != IGNORE_INDEX).nonzero(as_tuple=True)
    targets = next_location[rows, cols]
    n_locations = y_pred["candidates"].shape[0]
    if targets.numel() and (targets.min() < 0 or targets.max() >= n_locations):
        raise ValueError(
            f"next_location targets must be in 0..{n_locations - 1} or {IGNORE_INDEX} "
            "(ignore); "
            "mark out-of-vocabulary targets as ignored"
        )
    return rows, cols, targets
