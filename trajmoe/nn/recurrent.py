"""The paper's neural baselines: an LSTM and a plain Transformer over the same location features.

Both read the same tokens as TrajMoE (the summed POI, Geo and Pop embeddings of the spatial
semantic encoder plus the time embedding) and score the city's cells with the same location
tower and dot-product head (:class:`~trajmoe.nn.retrieval.RetrievalNetwork`), so they transfer
across cities like TrajMoE and differ from it only by their sequence encoder: no expert, no
router, one token stream.

References
----------
.. [1] Han et al., arXiv 2505.18670, v2 Table 2 (baselines LSTM and Transformer).
.. [2] Hochreiter, Schmidhuber. "Long Short-Term Memory", Neural Computation 9(8), 1997.
.. [3] Vaswani et al. "Attention Is All You Need", NeurIPS 2017.
"""

from __future__ import annotations

import torch
from torch import nn

from .._constants import N_CATEGORIES
from .retrieval import RetrievalNetwork

__all__ = ["LSTMNetwork", "TransformerNetwork"]


class LSTMNetwork(RetrievalNetwork):
    """LSTM next-location network: ``H = LSTM(poi_emb + geo_emb + pop_emb + t0)``.

    Parameters
    ----------
    n_poi_features : int, default=34
    d_model : int, default=64
        Embedding and hidden width ``d`` (divisible by 4).
    n_layers : int, default=2
        Stacked LSTM layers.
    max_len : int, default=144
    dropout : float, default=0.1
        Input dropout and dropout between LSTM layers.
    poi_transform : {"log1p", "raw"}, default="log1p"
    copy_path : bool, default=False
        The paper's baseline has none; True adds TrajMoE's copy path.
    location_ids : bool, default=False
        The literature's variant (the paper's and LibCity's baselines): per-city location ID
        embeddings in and out instead of the location features (see
        :class:`~trajmoe.nn.retrieval.RetrievalNetwork`).
    distance_prior : bool, default=False
    coord_encoding : {"linear", "sinusoidal"}, default="linear"
        As :class:`~trajmoe.nn.SAMoETransformer`.
    tie_embeddings : bool, default=False
        With ``location_ids``: the output ID embeddings are the input ones (weight tying; see
        :class:`~trajmoe.nn.retrieval.RetrievalNetwork`).

    Raises
    ------
    ValueError
        On a non-positive size or an invalid option (see :class:`RetrievalNetwork`), or
        ``tie_embeddings`` without ``location_ids``.

    Notes
    -----
    The LSTM keeps PyTorch's default initialisation; every other layer is GPT-2 initialised.
    Right padding never reaches valid positions (the LSTM runs left to right).
    """

    def __init__(self, n_poi_features: int = N_CATEGORIES, d_model: int = 64, n_layers: int = 2, max_len: int = 144,
                 dropout: float = 0.1, poi_transform: str = "log1p", copy_path: bool = False,
                 location_ids: bool = False, distance_prior: bool = False, coord_encoding: str = "linear",
                 tie_embeddings: bool = False) -> None:
        super().__init__(n_poi_features, d_model, max_len, dropout, poi_transform, copy_path,
                         location_ids=location_ids, distance_prior=distance_prior, coord_encoding=coord_encoding,
                         tie_embeddings=tie_embeddings)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.lstm = nn.LSTM(d_model, d_model, num_layers=n_layers, batch_first=True,
                            dropout=dropout if n_layers > 1 else 0.0)
        self._reset_parameters()

    def _encode(self, e_poi, e_geo, e_pop, t0, valid=None):
        hidden, _ = self.lstm(self.dropout(e_poi + e_geo + e_pop + t0))
        return hidden, None


class TransformerNetwork(RetrievalNetwork):
    """Plain decoder-only Transformer next-location network (pre-LN, GELU, causal mask).

    ``H = Transformer(poi_emb + geo_emb + pop_emb + t0)``: TrajMoE without the feature streams,
    experts and router (one FFN ``d -> 4d -> d`` per layer).

    Parameters
    ----------
    n_poi_features : int, default=34
    d_model : int, default=64
        Width ``d``, divisible by 4 and by ``n_heads``.
    n_layers : int, default=2
    n_heads : int, default=4
    max_len : int, default=144
    dropout : float, default=0.1
    poi_transform : {"log1p", "raw"}, default="log1p"
    copy_path : bool, default=False
        The paper's baseline has none; True adds TrajMoE's copy path.
    location_ids : bool, default=False
        The literature's variant (the paper's and LibCity's baselines): per-city location ID
        embeddings in and out instead of the location features (see
        :class:`~trajmoe.nn.retrieval.RetrievalNetwork`).
    distance_prior : bool, default=False
    coord_encoding : {"linear", "sinusoidal"}, default="linear"
        As :class:`~trajmoe.nn.SAMoETransformer`.
    tie_embeddings : bool, default=False
        With ``location_ids``: the output ID embeddings are the input ones (weight tying; see
        :class:`~trajmoe.nn.retrieval.RetrievalNetwork`).

    Raises
    ------
    ValueError
        On a non-positive size, ``d_model`` not divisible by ``n_heads``, an invalid option, or
        ``tie_embeddings`` without ``location_ids``.
    """

    def __init__(self, n_poi_features: int = N_CATEGORIES, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 max_len: int = 144, dropout: float = 0.1, poi_transform: str = "log1p",
                 copy_path: bool = False, location_ids: bool = False, distance_prior: bool = False,
                 coord_encoding: str = "linear", tie_embeddings: bool = False) -> None:
        super().__init__(n_poi_features, d_model, max_len, dropout, poi_transform, copy_path,
                         location_ids=location_ids, distance_prior=distance_prior, coord_encoding=coord_encoding,
                         tie_embeddings=tie_embeddings)
        if n_layers < 1 or n_heads < 1:
            raise ValueError(f"n_layers and n_heads must be >= 1, got {n_layers} and {n_heads}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self._reset_parameters()

    def _encode(self, e_poi, e_geo, e_pop, t0, valid=None):
        length = t0.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=t0.device).triu(1)
        return self.layers(self.dropout(e_poi + e_geo + e_pop + t0), mask=causal, is_causal=True), None
