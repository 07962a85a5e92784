"""The return scorer: a learned, city-invariant value of each cell of the window at each position.

The history prior (:class:`~trajmoe.nn.retrieval.RetrievalNetwork`, ``history_prior``) adds a
weighted sum of three counts of a window cell to its logit: visits, recency and the user's moves
from the current cell. Such a sum cannot say "a move from here outweighs any number of visits"
or "a return to a distant cell is not charged the distance decay"; the rules that beat it on
some cities do (docs/results.rst, "Where the transfer goes wrong"). The return scorer adds a small
MLP of the same counts and a few more features of the cell and the window, modulated by the
hidden state, to the logits of the window's cells only (at most ``L`` cells a position, so it
costs O(tokens x L), not O(tokens x cells)). Its output layer starts at zero: an untrained
scorer is the history prior. It reads no cell identity, so what it learns on the source cities
applies to any city.
"""

from __future__ import annotations

import torch
from torch import nn

#: Features of a window cell the return scorer reads (see :meth:`ReturnScorer.features`).
N_RETURN_FEATURES = 8
#: Hidden width of the return scorer's MLP.
RETURN_WIDTH = 32
_DISTANCE_UNIT = 500.0     # metres (the default cell size): distances enter as log(1 + d / 500 m)


class ReturnScorer(nn.Module):
    r"""Learned value of every cell of the window: ``s = scale W_2 GELU(W_1 f + \lambda U h)``.

    Parameters
    ----------
    d_model : int
        Width of the hidden states ``h`` that modulate the first layer.
    scale : float
        Storage scale of the output (the rule priors' ``RULE_SCALE``): the output layer is stored
        divided by it, so that AdamW's steps of about the learning rate move logits by about
        ``scale`` times that.

    Notes
    -----
    ``W_1`` [32, 8] has PyTorch's default initialisation (restored by :meth:`reset_parameters`
    after the network's N(0, 0.02) initialisation, which would leave the hidden units near
    zero and their output weights without gradient to speak of), ``U`` [32, d] N(0, 0.02) and
    ``W_2`` [1, 32] zero: the scorer adds nothing until trained. ``\lambda`` is the network's
    ``learned_weight`` (the hidden-state terms of a log-linear pool at inference).
    """

    def __init__(self, d_model: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.features_in = nn.Linear(N_RETURN_FEATURES, RETURN_WIDTH)
        self.hidden_in = nn.Linear(d_model, RETURN_WIDTH, bias=False)
        self.out = nn.Linear(RETURN_WIDTH, 1)

    def reset_parameters(self, std: float = 0.02) -> None:
        """Restore the initialisation of the class Notes (after the network's own)."""
        self.features_in.reset_parameters()
        nn.init.normal_(self.hidden_in.weight, std=std)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def is_idle(self) -> bool:
        """Whether the scorer adds nothing and learns nothing now: its output layer is zero (as
        initialised) and gets no gradient (grad mode off, or its weights frozen). The network
        then skips it."""
        trains = torch.is_grad_enabled() and (self.out.weight.requires_grad or self.out.bias.requires_grad)
        return not trains and not bool(self.out.weight.any() or self.out.bias.any())

    @staticmethod
    def features(ids, count, recency, moves, current, positions, metres, n_cells: int) -> torch.Tensor:
        """The eight features of each window cell.

        Parameters
        ----------
        ids, count, recency, moves : Tensor [n, L]
            :func:`~trajmoe.nn.retrieval.history_entries` of ``n`` positions (``ids == n_cells``
            where an entry holds no cell).
        current : LongTensor [n]
            Current cell of each position (0..N-1; -1 or N: PAD or unknown).
        positions : LongTensor [n]
            Index of each position in its window (0 = first stay).
        metres : FloatTensor [N+1, 2] or None
            Cell centroids in metres; None: the distance feature is 0.
        n_cells : int
            Number of cells ``N``.

        Returns
        -------
        FloatTensor [n, L, 8]
            ``log1p(count)``, recency, ``log1p(moves)``, ``log(1 + d / 500 m)`` from the current
            cell (0 where it is unknown), the cell's share of the window's stays so far, its share
            of the moves from the current cell (0 if none), ``log1p(position)`` and whether it is
            the current cell.
        """
        known = (current >= 0) & (current < n_cells)
        if metres is None:
            distance = torch.zeros_like(count)
        else:
            here = metres[current.clamp(0, n_cells)]
            offset = metres[ids.clamp(max=n_cells)] - here[:, None, :]
            distance = torch.log1p(offset.square().sum(-1).sqrt() / _DISTANCE_UNIT) * known[:, None]
        position = positions.to(count.dtype)[:, None].expand_as(count)
        departures = moves.sum(1, keepdim=True).clamp_min(1.0)
        is_current = ids == torch.where(known, current, -2)[:, None]
        return torch.stack([torch.log1p(count), recency, torch.log1p(moves), distance.to(count.dtype),
                            count / (position + 1.0), moves / departures, torch.log1p(position),
                            is_current.to(count.dtype)], -1)

    def forward(self, features: torch.Tensor, h: torch.Tensor, entries: torch.Tensor,
                learned_weight: float = 1.0) -> torch.Tensor:
        """Value of each window cell.

        Parameters
        ----------
        features : FloatTensor [n, L, 8]
            :meth:`features`.
        h : FloatTensor [n, d]
            Hidden state (after the final LayerNorm) of each position.
        entries : BoolTensor [n, L]
            The entries that hold a cell: only these are scored (the MLP runs on them alone).
        learned_weight : float, default 1.0
            Weight of the hidden-state modulation.

        Returns
        -------
        FloatTensor [n, L]
            Logit increments at ``entries`` (0 is where the scorer starts), 0 elsewhere.
        """
        row, col = entries.nonzero(as_tuple=True)
        hidden = self.features_in(features[row, col].to(h.dtype)) + (learned_weight * self.hidden_in(h))[row]
        value = self.scale * self.out(torch.nn.functional.gelu(hidden)).squeeze(-1)
        return value.new_zeros(entries.shape).index_put((row, col), value)


__all__ = ["N_RETURN_FEATURES", "RETURN_WIDTH", "ReturnScorer"]
