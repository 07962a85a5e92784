"""Token embeddings of the SAMoE transformer (docs/method.rst, "Task, grid and windows" to "The SAMoE network").

Two ideas live here:

* :class:`TimeEmbedding` -- the sum of learned slot, day-of-week, gap and position embeddings
  that is added to every specialist stream and feeds the temporal router (docs/method.rst, "The SAMoE network").
* :class:`LocationInputEmbedding` -- the input side of the spatial semantic encoder: one learned
  projection per feature family (POI semantics, geography, popularity), giving the POI, Geo and Pop
  streams (docs/method.rst, "Location features", input side).

References
----------
.. [1] Han, Yuan, Chen, Ding, Li. "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human
   Mobility Modeling", arXiv 2505.18670 (v2: "MoveGPT"), 2025.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._constants import N_DOWS, N_GAPS, N_RANKS, N_SLOTS


class TimeEmbedding(nn.Module):
    r"""Learned time embedding :math:`t = E_{slot} + E_{dow} + E_{gap} + E_{pos}`.

    Implements the time embedding of docs/method.rst, "The SAMoE network". The layer-0 output is reused unchanged by
    the temporal router of every SAMoE block and by the prediction head.

    Parameters
    ----------
    d_model : int
        Embedding width ``d``.
    max_len : int
        Number of learned positions (the longest accepted sequence; 144 = 3 days of half hours).

    Notes
    -----
    Day-of-week index 0 is padding; it has an ordinary learned row (padding tokens come after all
    valid tokens, so under the causal mask their embedding never reaches a valid position).
    """

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.slot = nn.Embedding(N_SLOTS, d_model)
        self.dow = nn.Embedding(N_DOWS, d_model)
        self.gap = nn.Embedding(N_GAPS, d_model)
        self.position = nn.Embedding(max_len, d_model)

    def forward(self, slot: torch.Tensor, dow: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
        """Embed the time features of a batch of sequences.

        Parameters
        ----------
        slot : LongTensor [B, L]
            Half-hour slot of day, 0..47.
        dow : LongTensor [B, L]
            Day of week, 1..7 (0 = padding).
        gap : LongTensor [B, L]
            Time since the previous stay in half-hour slots, 0..95.

        Returns
        -------
        FloatTensor [B, L, d]
            Time embedding ``t``.

        Raises
        ------
        ValueError
            If ``L`` exceeds ``max_len``.
        """
        length = slot.shape[1]
        if length > self.position.num_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds max_len={self.position.num_embeddings}; "
                "cut the windows or build the model with a larger max_len"
            )
        position = torch.arange(length, device=slot.device)
        return self.slot(slot) + self.dow(dow) + self.gap(gap) + self.position(position)


class LocationInputEmbedding(nn.Module):
    """Input side of the spatial semantic encoder: per-feature-family token embeddings.

    Implements the input side of docs/method.rst, "Location features": POI features -> ``Linear(P, d)``, coordinates ->
    ``Linear(2, d)``, popularity rank -> ``Embedding(9, d)``. Each projection opens one specialist
    stream (POI, Geo, Pop) of the SAMoE transformer.

    Parameters
    ----------
    n_poi_features : int
        Number of POI features ``P`` per cell (34 for the shared taxonomy).
    d_model : int
        Embedding width ``d``.
    n_coord_features : int, default=2
        Coordinate features per cell ``G``: the 2 z-scored coordinates, plus the multi-scale
        sinusoidal features of :class:`SinusoidalCoordinates` when the network uses them.

    Notes
    -----
    Rank index 0 has a learned row: it marks the out-of-vocabulary row (all-zero POI and coordinate
    features), giving unknown cells their own vector instead of that of an empty cell at the
    centroid.
    """

    def __init__(self, n_poi_features: int, d_model: int, n_coord_features: int = 2) -> None:
        super().__init__()
        self.poi = nn.Linear(n_poi_features, d_model)
        self.geo = nn.Linear(n_coord_features, d_model)
        self.pop = nn.Embedding(N_RANKS, d_model)

    def forward(
        self, poi: torch.Tensor, coords: torch.Tensor, rank: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed the features of the tokens' cells (already gathered per token).

        Parameters
        ----------
        poi : FloatTensor [..., P]
            POI features of each token's cell (after the model's ``poi_transform``).
        coords : FloatTensor [..., G]
            Coordinate features (z-scored centroid coordinates, optionally followed by sinusoidal
            features).
        rank : LongTensor [...]
            Popularity rank bin, 0..8.

        Returns
        -------
        tuple of three FloatTensor [..., d]
            ``(poi_emb, geo_emb, pop_emb)``.
        """
        return self.poi(poi), self.geo(coords), self.pop(rank)


class SinusoidalCoordinates(nn.Module):
    r"""Multi-scale sinusoidal features of metric coordinates (Space2Vec's "theory" encoder).

    For ``S`` wavelengths :math:`\lambda_s` spaced geometrically from ``min_wavelength`` to
    ``max_wavelength`` and the three unit vectors :math:`a_j` at 0, 120 and 240 degrees, a point
    :math:`x` (metres from the city's centre) gets :math:`\sin(2\pi\, a_j \cdot x / \lambda_s)`
    and :math:`\cos(\cdot)`: ``6 S`` features. A dot product of two such vectors is a sum of
    cosines of their offset, so a linear layer on top can express "close to" at every scale from a
    cell to a metropolis, which a linear map of raw coordinates cannot. No learned weights.

    Parameters
    ----------
    n_scales : int, default=16
        Number of wavelengths ``S``.
    min_wavelength, max_wavelength : float, default=1000.0 and 100000.0
        Metres. 1 km resolves neighbouring 500 m cells; 100 km spans a metropolitan region.

    References
    ----------
    .. [1] Mai, Janowicz, Yan, Zhu, Cai, Lao. "Multi-Scale Representation Learning for Spatial
       Feature Distributions using Grid Cells", ICLR 2020 (Space2Vec).
    """

    def __init__(self, n_scales: int = 16, min_wavelength: float = 1000.0, max_wavelength: float = 100_000.0) -> None:
        super().__init__()
        if n_scales < 1 or not 0 < min_wavelength <= max_wavelength:
            raise ValueError("n_scales must be >= 1 and 0 < min_wavelength <= max_wavelength")
        ratio = (max_wavelength / min_wavelength) ** (1.0 / max(n_scales - 1, 1))
        frequencies = 2 * math.pi / (min_wavelength * ratio ** torch.arange(n_scales, dtype=torch.float64))
        angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
        directions = torch.stack([torch.cos(angles), torch.sin(angles)])                  # [2, 3]
        # [2, 3 S]: metres -> phase of every (direction, scale)
        projection = (directions[:, :, None] * frequencies[None, None, :]).reshape(2, -1)
        self.register_buffer("projection", projection.float(), persistent=False)

    @property
    def n_features(self) -> int:
        """Number of output features, ``6 S``."""
        return 2 * self.projection.shape[1]

    def forward(self, metres: torch.Tensor) -> torch.Tensor:
        """Encode points.

        Parameters
        ----------
        metres : FloatTensor [..., 2]
            Easting and northing in metres, relative to the city's centre.

        Returns
        -------
        FloatTensor [..., 6 S]
        """
        phase = metres @ self.projection.to(metres.dtype)
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)
