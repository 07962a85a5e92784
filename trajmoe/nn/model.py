"""The SAMoE transformer: TrajMoE's network (docs/method.rst, "Location features", "The SAMoE
network" and "Copy path and rule priors").

References
----------
.. [1] Han, Yuan, Chen, Ding, Li. "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human
   Mobility Modeling", arXiv 2505.18670 (v2: "MoveGPT"), 2025.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._constants import N_CATEGORIES
from .._validation import check_choice
from .retrieval import RetrievalNetwork
from .samoe import ROUTERS, SELECTORS, ExpertFFN, SAMoEBlock

#: Model sizes. "base" and "ultra" are the paper's (docs/method.rst, "The SAMoE network"); "small" is a CPU size.
PRESETS = {
    "small": dict(d_model=64, n_layers=2, n_heads=4),
    "base": dict(d_model=512, n_layers=4, n_heads=4),
    "ultra": dict(d_model=768, n_layers=12, n_heads=6),
}


class SAMoETransformer(RetrievalNetwork):
    r"""TrajMoE's decoder-only spatially-aware mixture-of-experts transformer.

    Given a single-city batch of trajectories, returns for every position a query vector (scored by
    dot product against the city's candidate matrix from the location tower), next-gap logits, and
    the inputs of the optional copy (pointer) path. Log-probabilities over cells are computed from
    this output by :func:`trajmoe.nn.location_log_probs`.

    Architecture (docs/method.rst, "Location features" and "The SAMoE network"):
    time embedding ``t0`` (:class:`TimeEmbedding`); POI, Geo
    and Pop streams ``emb + t0`` and a trajectory stream ``poi_emb + geo_emb + pop_emb``
    (:class:`LocationInputEmbedding`), stacked on the batch axis; ``n_layers`` pre-LN
    :class:`SAMoEBlock`\ s; head ``h = LN_f(H_traj + t0)``, ``q = W_q h`` (no bias),
    ``time_logits = Linear(d, 96)(q)``; candidates ``C = LocationTower(features)`` [N, d].

    The inputs, candidates, heads and the optional copy path are those of
    :class:`~trajmoe.nn.retrieval.RetrievalNetwork`.

    Parameters
    ----------
    n_poi_features : int, default=34
        POI features per cell ``P`` (the shared taxonomy's categories).
    d_model : int, default=64
        Model width ``d``; divisible by 4 and by ``n_heads``.
    n_layers : int, default=2
        Number of SAMoE blocks.
    n_heads : int, default=4
        Attention heads.
    max_len : int, default=144
        Longest sequence (learned positions); 144 = 3 days of half-hour slots.
    dropout : float, default=0.1
        Embedding, attention and residual dropout.
    poi_transform : {"log1p", "raw"}, default="log1p"
        Applied to the POI features of the registered tables before both the input embedding and
        the tower. The reference code feeds raw counts; ``log1p`` tames heavy-tailed counts.
    experts : bool, default=True
        ``False``: "without the mixture" ablation (one plain FFN shared by all streams, no router).
    shared_expert : bool, default=True
        ``False``: "without shared expert" ablation.
    router : {"star", "spatial", "temporal"}, default="star"
        ``"spatial"`` / ``"temporal"``: "without temporal / spatial router" ablations.
    selector : {"soft", "hard", "none"}, default="soft"
        Selector of the STAR router: ``"soft"`` (reference code), ``"hard"`` (paper),
        ``"none"`` ("without selector" ablation). See :class:`~trajmoe.nn.samoe.STARRouter`.
    shared_gate : bool, default=True
        ``W_s`` is ``W_t`` (reference code); ``False``: separate (paper).
    time_in_trajectory : bool, default=False
        Add ``t0`` to the trajectory stream too (the reference code does not).
    copy_path : bool, default=True
        Add the gated copy path (not in the paper; docs/method.rst, "Copy path and rule
        priors"). ``False`` = faithful model.
    copy_successor : bool, default=True
        With the copy path, score history stays that followed an earlier visit to the current
        cell (see :class:`~trajmoe.nn.retrieval.RetrievalNetwork`).
    top_k : int or None, default=None
        None: dense gating (the paper). 1..3: sparse noisy top-k gating of the specialists
        (see :class:`~trajmoe.nn.samoe.STARRouter`).
    distance_prior : bool, default=False
        Add the learned distance prior to the candidate logits (not in the paper; see
        :class:`~trajmoe.nn.retrieval.RetrievalNetwork`).
    coord_encoding : {"linear", "sinusoidal"}, default="linear"
        ``"sinusoidal"`` adds multi-scale sinusoidal features of the metric position (Space2Vec)
        to the geography input and the tower (not in the paper).
    cell_embedding : bool, default=False
        Add a per-cell residual to the candidate vectors, zero for a new city (docs/method.rst,
        "Copy path and rule priors"; not in the paper).
    history_prior : bool, default=False
        Add the window's visit counts and recency to the candidate logits, with learned,
        hidden-state-modulated weights (not in the paper; see
        :class:`~trajmoe.nn.retrieval.RetrievalNetwork`).
    history_moves : bool, default=False
        With ``history_prior``: also the window's moves from the current cell (see
        :class:`~trajmoe.nn.retrieval.RetrievalNetwork`; not in the paper).
    return_scorer : bool, default=False
        With ``history_moves``: a learned value of each cell of the window (see
        :class:`~trajmoe.nn.retrieval.RetrievalNetwork`; not in the paper).

    Attributes
    ----------
    cities : tuple of int
        Indices of the registered cities.

    Raises
    ------
    ValueError
        On an unknown option value, a non-positive size, ``d_model`` not divisible by 4 and by
        ``n_heads``, or ``dropout`` outside [0, 1).

    Notes
    -----
    City tables, ``state_dict`` loading and padding: see
    :class:`~trajmoe.nn.retrieval.RetrievalNetwork`.

    **Initialisation** (GPT-2): weights N(0, 0.02), biases 0, LayerNorm (1, 0); the residual output
    projections (attention output, expert FFN output) N(0, 0.02 / sqrt(2 n_layers)).

    **Parameter count** (``P = 34``, buffers excluded): "small" 0.374 M, "base" 40.94 M, "ultra"
    261.97 M without the copy path, matching the paper's ~41 M and ~261 M; the copy path adds
    ``d^2 + d + 1`` (0.378 M, 41.20 M, 262.56 M).

    References
    ----------
    .. [1] Han et al., arXiv 2505.18670, sections "Spatial semantic encoder" and "SAMoE".
    """

    def __init__(
        self,
        n_poi_features: int = N_CATEGORIES,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        max_len: int = 144,
        dropout: float = 0.1,
        poi_transform: str = "log1p",
        experts: bool = True,
        shared_expert: bool = True,
        router: str = "star",
        selector: str = "soft",
        shared_gate: bool = True,
        time_in_trajectory: bool = False,
        copy_path: bool = True,
        copy_successor: bool = True,
        top_k: int | None = None,
        distance_prior: bool = False,
        coord_encoding: str = "linear",
        cell_embedding: bool = False,
        history_prior: bool = False,
        history_moves: bool = False,
        return_scorer: bool = False,
    ) -> None:
        super().__init__(n_poi_features, d_model, max_len, dropout, poi_transform, copy_path, copy_successor,
                         distance_prior=distance_prior, coord_encoding=coord_encoding,
                         cell_embedding=cell_embedding, history_prior=history_prior, history_moves=history_moves,
                         return_scorer=return_scorer)
        check_choice("router", router, ROUTERS)
        check_choice("selector", selector, SELECTORS)
        for name, value in dict(n_layers=n_layers, n_heads=n_heads).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.time_in_trajectory = time_in_trajectory
        block_options = (experts, shared_expert, router, selector, shared_gate, top_k)
        self.blocks = nn.ModuleList(
            SAMoEBlock(d_model, n_heads, dropout, *block_options) for _ in range(n_layers)
        )
        self._reset_parameters()
        residual_std = 0.02 / math.sqrt(2 * n_layers)
        for module in self.modules():
            if isinstance(module, ExpertFFN):
                module.reset_parameters(0.02, residual_std)
        if self.return_scorer is not None:      # starts at the history prior: adds nothing until trained
            self.return_scorer.reset_parameters()
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, std=residual_std)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> SAMoETransformer:
        """Build a model of a named size from :data:`PRESETS`; ``kwargs`` override or add options.

        Raises
        ------
        ValueError
            If ``name`` is not a preset.
        """
        check_choice("preset", name, tuple(PRESETS))
        return cls(**{**PRESETS[name], **kwargs})

    def _encode(self, e_poi, e_geo, e_pop, t0, valid=None):
        """Four streams stacked on the batch axis through the SAMoE blocks; returns
        ``H_traj + t0`` (the head's input) and the last block's router weights. The blocks' expert
        FFNs and router skip the PAD tokens (``valid`` False)."""
        trajectory = e_poi + e_geo + e_pop
        if self.time_in_trajectory:
            trajectory = trajectory + t0
        h = self.dropout(torch.cat([e_poi + t0, e_geo + t0, e_pop + t0, trajectory]))
        gates = None
        for block in self.blocks:
            h, gates = block(h, t0, valid)
        return h[-t0.shape[0]:] + t0, gates


__all__ = ["PRESETS", "SAMoETransformer"]
