"""Location tower: the candidate side of the spatial semantic encoder (docs/method.rst, "Location features").

The tower maps every cell's feature row (POI semantics, coordinates, popularity rank) to a candidate
vector; a city's candidate matrix ``C_city`` [N, d] is what queries are scored against. Because it
reads only features that mean the same in every city, one tower serves cities whose vocabularies
differ.

References
----------
.. [1] Han et al., arXiv 2505.18670 (TrajMoE / MoveGPT), section "Spatial semantic encoder".
.. [2] Wang, Fu, Fu, Wang. "Deep & Cross Network for Ad Click Predictions", ADKDD 2017.
"""

from __future__ import annotations

import torch
from torch import nn

from .embeddings import N_RANKS


class CrossNetwork(nn.Module):
    r"""Stack of DCN cross layers :math:`x_{l+1} = x_0 \, (w_l \cdot x_l) + b_l + x_l`.

    Parameters
    ----------
    d_model : int
        Feature width ``d``.
    n_layers : int, default=2
        Number of cross layers (the paper's: 2).

    Attributes
    ----------
    weight : Parameter [n_layers, d]
        The vectors ``w_l``.
    bias : Parameter [n_layers, d]
        The biases ``b_l`` (zero-initialised).

    References
    ----------
    .. [1] Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017 (the cross
       layer); Han et al., arXiv 2505.18670, section "Spatial semantic encoder" (its use in the
       location tower).
    """

    def __init__(self, d_model: int, n_layers: int = 2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_layers, d_model))
        self.bias = nn.Parameter(torch.zeros(n_layers, d_model))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Draw ``w_l`` from N(0, std) and zero ``b_l``."""
        nn.init.normal_(self.weight, std=std)
        nn.init.zeros_(self.bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Apply the cross layers.

        Parameters
        ----------
        x0 : FloatTensor [N, d]

        Returns
        -------
        FloatTensor [N, d]
        """
        x = x0
        for w, b in zip(self.weight, self.bias):
            x = x0 * (x @ w).unsqueeze(-1) + b + x
        return x


class LocationTower(nn.Module):
    """Deep & Cross location tower producing a city's candidate matrix.

    Implements the candidate side of docs/method.rst, "Location features": ``concat[Linear(2, d/2)(coords),
    Embedding(9, d/4)(rank), Linear(P, d/4)(poi)]`` -> a cross network (2 layers) in parallel with
    an MLP ``d -> 4d -> d`` (GELU) -> concatenation (2d) -> ``Linear(2d, d)``. The weights are
    separate from the input embeddings. (The paper's equation sums the three parts; the reference
    code, which is followed here, concatenates them.)

    Parameters
    ----------
    n_poi_features : int
        Number of POI features ``P``.
    d_model : int
        Output width ``d``; must be divisible by 4.
    n_cross_layers : int, default=2
        Depth of the cross network.
    n_coord_features : int, default=2
        Coordinate features per cell ``G`` (2 z-scored coordinates, optionally followed by
        sinusoidal features).
    """

    def __init__(self, n_poi_features: int, d_model: int, n_cross_layers: int = 2, n_coord_features: int = 2) -> None:
        super().__init__()
        self.geo = nn.Linear(n_coord_features, d_model // 2)
        self.pop = nn.Embedding(N_RANKS, d_model // 4)
        self.poi = nn.Linear(n_poi_features, d_model // 4)
        self.cross = CrossNetwork(d_model, n_cross_layers)
        self.deep = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )
        self.proj = nn.Linear(2 * d_model, d_model)

    def forward(self, poi: torch.Tensor, coords: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
        """Encode cells into candidate vectors.

        Parameters
        ----------
        poi : FloatTensor [N, P]
            POI features (after the model's ``poi_transform``).
        coords : FloatTensor [N, G]
            Coordinate features (z-scored centroid coordinates, optionally followed by
            sinusoidal features).
        rank : LongTensor [N]
            Popularity rank bins, 0..8.

        Returns
        -------
        FloatTensor [N, d]
            Candidate matrix ``C_city``.
        """
        x0 = torch.cat([self.geo(coords), self.pop(rank), self.poi(poi)], dim=-1)
        return self.proj(torch.cat([self.cross(x0), self.deep(x0)], dim=-1))
