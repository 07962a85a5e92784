"""Spatially-aware mixture of experts (SAMoE) blocks (docs/method.rst, "The SAMoE network").

A SAMoE block processes four token streams stacked on the batch axis, ``[4B, L, d]`` in the order
:data:`STREAMS` (POI, Geo, Pop, trajectory). All streams share the causal self-attention and
LayerNorm weights but never attend to each other (they are different batch rows). After attention:

* each specialist stream (POI, Geo, Pop) adds the output of its own expert FFN, ungated;
* the trajectory stream adds the shared expert applied to itself plus the specialists' outputs,
  mixed by the STAR router: ``H_traj += FFN_shared(Z_traj) + sum_i g_i e_i``.

Every token uses every expert (dense soft gating: no top-k, no capacity, no balancing loss).

References
----------
.. [1] Han et al., arXiv 2505.18670 (TrajMoE / MoveGPT), section "SAMoE Transformer".
.. [2] Radford et al. "Language Models are Unsupervised Multitask Learners" (GPT-2), 2019:
   pre-LN blocks and scaled residual initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice

#: Order of the four token streams on the stacked batch axis.
STREAMS = ("poi", "geo", "pop", "trajectory")
#: Number of specialist experts (one per feature family: POI, geography, popularity).
N_SPECIALISTS = 3

ROUTERS = ("star", "spatial", "temporal")
SELECTORS = ("soft", "hard", "none")


class ExpertFFN(nn.Module):
    """``E`` independent position-wise FFNs ``d -> 4d -> d`` (GELU) run as one batched matmul.

    Expert ``e`` is applied to slice ``e`` of the input, so the specialists (and the shared expert)
    run on their own streams with two ``baddbmm`` calls instead of a Python loop over experts.

    Parameters
    ----------
    n_experts : int
        Number of experts ``E``.
    d_model : int
        Model width ``d``.
    expansion : int, default=4
        Hidden width multiplier.

    Attributes
    ----------
    in_weight : Parameter [E, d, 4d]
    in_bias : Parameter [E, 4d]
    out_weight : Parameter [E, 4d, d]
        Residual output projection (scaled initialisation, see :meth:`reset_parameters`).
    out_bias : Parameter [E, d]

    References
    ----------
    .. [1] Han et al., arXiv 2505.18670, section "SAMoE Transformer" (the POI, geography,
       popularity and shared experts).
    """

    def __init__(self, n_experts: int, d_model: int, expansion: int = 4) -> None:
        super().__init__()
        hidden = expansion * d_model
        self.in_weight = nn.Parameter(torch.empty(n_experts, d_model, hidden))
        self.in_bias = nn.Parameter(torch.empty(n_experts, hidden))
        self.out_weight = nn.Parameter(torch.empty(n_experts, hidden, d_model))
        self.out_bias = nn.Parameter(torch.empty(n_experts, d_model))
        self.reset_parameters()

    @property
    def n_experts(self) -> int:
        """Number of experts ``E``."""
        return self.in_weight.shape[0]

    def reset_parameters(self, std: float = 0.02, out_std: float = 0.02) -> None:
        """Draw weights from N(0, std) (output projection: N(0, out_std)); zero the biases."""
        nn.init.normal_(self.in_weight, std=std)
        nn.init.normal_(self.out_weight, std=out_std)
        nn.init.zeros_(self.in_bias)
        nn.init.zeros_(self.out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply expert ``e`` to ``x[e]``.

        Parameters
        ----------
        x : FloatTensor [E, M, d]

        Returns
        -------
        FloatTensor [E, M, d]
        """
        hidden = F.gelu(torch.baddbmm(self.in_bias.unsqueeze(1), x, self.in_weight))
        return torch.baddbmm(self.out_bias.unsqueeze(1), hidden, self.out_weight)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (``F.scaled_dot_product_attention``, ``is_causal=True``).

    Parameters
    ----------
    d_model : int
        Model width ``d``; divisible by ``n_heads``.
    n_heads : int
        Number of heads.
    dropout : float
        Attention-probability dropout (training only).

    Notes
    -----
    Only a causal mask is applied: padding must come AFTER the valid tokens of a sequence (right
    padding), so that no valid position ever attends to a padding position.

    References
    ----------
    .. [1] Vaswani et al., "Attention Is All You Need", NeurIPS 2017; Han et al., arXiv
       2505.18670, section "SAMoE Transformer" (one attention over the four streams).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend causally within each row.

        Parameters
        ----------
        x : FloatTensor [N, L, d]
            ``N`` independent sequences (here: the 4 stacked streams x batch).

        Returns
        -------
        FloatTensor [N, L, d]
        """
        n, length, d = x.shape
        qkv = self.qkv(x).view(n, length, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [N, heads, L, d / heads]
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        return self.out_proj(y.transpose(1, 2).reshape(n, length, d))


class STARRouter(nn.Module):
    r"""Spatial-temporal adaptive router (STAR) over the three specialist experts.

    ``g_s = softmax(W_s Z_traj)`` (spatial gate), ``g_t = softmax(W_t t0)`` (temporal gate, from the
    layer-0 time embedding), selector ``[w1, w2] = softmax(W_sel [Z_traj; t0])``, and the gate
    ``g = w1 g_s + w2 g_t`` (docs/method.rst, "The SAMoE network").

    Parameters
    ----------
    d_model : int
        Model width ``d``.
    router : {"star", "spatial", "temporal"}, default="star"
        ``"spatial"``: ``g = g_s``; ``"temporal"``: ``g = g_t`` (the paper's router ablations).
    selector : {"soft", "hard", "none"}, default="soft"
        How ``g_s`` and ``g_t`` are combined when ``router="star"`` (ignored otherwise).
        ``"soft"``: the softmax selector (reference code). ``"hard"``: one-hot of the argmax
        (``w1 = 1`` if ``w1 >= w2``, the paper) with a straight-through gradient. ``"none"``:
        ``g = (g_s + g_t) / 2`` (the paper's "without selector" ablation).
    shared_gate : bool, default=True
        ``True``: ``W_s`` and ``W_t`` are one ``Linear(d, 3)`` (reference code); ``False``: two
        separate layers (the paper). Only meaningful for ``router="star"``.
    top_k : int or None, default=None
        None: dense gating (every token uses every expert, as TrajMoE). ``k`` in 1..3: sparse
        noisy top-k gating (Shazeer et al. 2017, as the same lab's UniMove): during training
        ``log g + eps * softplus(W_noise Z_traj)`` with ``eps ~ N(0, 1)``, then only the ``k``
        largest gates are kept and renormalised (no noise at evaluation).

    Raises
    ------
    ValueError
        On an unknown ``router`` or ``selector``, or a ``top_k`` that is not None nor an int in
        1..3.

    References
    ----------
    .. [1] Han et al., arXiv 2505.18670, section "SAMoE Transformer" (STAR router).
    .. [2] Shazeer et al. "Outrageously Large Neural Networks: The Sparsely-Gated
       Mixture-of-Experts Layer", ICLR 2017 (noisy top-k gating).
    """

    def __init__(
        self, d_model: int, router: str = "star", selector: str = "soft", shared_gate: bool = True,
        top_k: int | None = None,
    ) -> None:
        super().__init__()
        check_choice("router", router, ROUTERS)
        check_choice("selector", selector, SELECTORS)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or not 1 <= top_k <= N_SPECIALISTS):
            raise ValueError(f"top_k must be None or an int in 1..{N_SPECIALISTS}, got {top_k!r}")
        self.top_k = top_k
        self.noise = nn.Linear(d_model, N_SPECIALISTS) if top_k is not None else None
        self.router = router
        self.selector_mode = selector
        use_spatial = router in ("star", "spatial")
        separate_temporal = router == "temporal" or (router == "star" and not shared_gate)
        self.spatial = nn.Linear(d_model, N_SPECIALISTS) if use_spatial else None
        self.temporal = nn.Linear(d_model, N_SPECIALISTS) if separate_temporal else None
        use_selector = router == "star" and selector != "none"
        self.selector = nn.Linear(2 * d_model, 2) if use_selector else None

    def spatial_gate(self, z: torch.Tensor) -> torch.Tensor:
        """``g_s = softmax(W_s z)``: FloatTensor [..., d] -> FloatTensor [..., 3]."""
        return torch.softmax(self.spatial(z), dim=-1)

    def temporal_gate(self, t0: torch.Tensor) -> torch.Tensor:
        """``g_t = softmax(W_t t0)``: FloatTensor [..., d] -> FloatTensor [..., 3].

        Uses ``W_s`` when the gate weights are shared.
        """
        layer = self.temporal if self.temporal is not None else self.spatial
        return torch.softmax(layer(t0), dim=-1)

    def selector_weights(self, z: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
        """Selector weights ``[w1, w2]``: FloatTensor [..., d] x 2 -> FloatTensor [..., 2].

        With ``selector="hard"`` the forward value is exactly one-hot (ties go to ``w1``) and the
        gradient is that of the soft weights (straight-through estimator).
        """
        soft = torch.softmax(self.selector(torch.cat([z, t0], dim=-1)), dim=-1)
        if self.selector_mode == "soft":
            return soft
        hard = F.one_hot(soft.argmax(dim=-1), 2).to(soft.dtype)
        return hard + (soft - soft.detach())

    def forward(self, z: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
        """Expert gate of every trajectory token.

        Parameters
        ----------
        z : FloatTensor [B, L, d]
            Normalised trajectory stream ``Z_traj = LN2(H_traj)``.
        t0 : FloatTensor [B, L, d]
            Layer-0 time embedding.

        Returns
        -------
        FloatTensor [B, L, 3]
            Non-negative weights of the POI, Geo and Pop experts, summing to 1.
        """
        gates = self._dense_gates(z, t0)
        return gates if self.top_k is None else self._sparse(gates, z)

    def _dense_gates(self, z: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
        if self.router == "spatial":
            return self.spatial_gate(z)
        if self.router == "temporal":
            return self.temporal_gate(t0)
        g_s, g_t = self.spatial_gate(z), self.temporal_gate(t0)
        if self.selector is None:
            return (g_s + g_t) / 2
        w = self.selector_weights(z, t0)
        return w[..., :1] * g_s + w[..., 1:] * g_t

    def _sparse(self, gates: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Noisy top-k of dense gates [B, L, 3]: the k largest, renormalised, others exactly 0."""
        logits = torch.log(gates.clamp_min(1e-9))
        if self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(self.noise(z))
        kept = logits.topk(self.top_k, dim=-1).indices
        mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, kept, True)
        return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


class SAMoEBlock(nn.Module):
    """One pre-LN SAMoE transformer block over the four stacked streams.

    Parameters
    ----------
    d_model, n_heads : int
        Width and number of attention heads.
    dropout : float
        Attention and residual dropout.
    experts : bool, default=True
        ``False``: plain-FFN ablation -- ONE FFN shared by all four streams, no router.
    shared_expert : bool, default=True
        ``False``: drop ``FFN_shared`` (the trajectory stream gets only the gated specialists).
    router, selector, shared_gate, top_k
        See :class:`STARRouter`.

    Attributes
    ----------
    ffn : ExpertFFN
        ``E`` = 4 (POI, Geo, Pop, shared; expert ``e`` runs on stream ``e``), 3 without the shared
        expert, or 1 (plain FFN on every stream) without experts.
    router : STARRouter or None

    References
    ----------
    .. [1] Han et al., arXiv 2505.18670, section "SAMoE Transformer" (the block: attention, then
       the specialist experts gated by the STAR router plus the shared expert); docs/method.rst,
       "The SAMoE network".
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float,
        experts: bool = True,
        shared_expert: bool = True,
        router: str = "star",
        selector: str = "soft",
        shared_gate: bool = True,
        top_k: int | None = None,
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        n_experts = (N_SPECIALISTS + shared_expert) if experts else 1
        self.ffn = ExpertFFN(n_experts, d_model)
        self.router = STARRouter(d_model, router, selector, shared_gate, top_k) if experts else None
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, h: torch.Tensor, t0: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Update the stacked streams.

        Parameters
        ----------
        h : FloatTensor [4B, L, d]
            Streams stacked stream-major in the order :data:`STREAMS`.
        t0 : FloatTensor [B, L, d]
            Layer-0 time embedding (router input).
        valid : BoolTensor [B, L], optional
            Real (non-PAD) tokens. The expert FFNs and the router then run on these tokens only
            (PAD tokens keep their attention update and get no FFN update); None: every token.
            PAD tokens trail the valid ones, so valid tokens get the same values either way.

        Returns
        -------
        h : FloatTensor [4B, L, d]
        gates : FloatTensor [B, L, 3] or None
            Router weights of the specialists (0 at PAD tokens when ``valid`` is given; None
            without experts).
        """
        h = h + self.dropout(self.attn(self.ln1(h)))
        batch, length, d = t0.shape
        streams = h.view(len(STREAMS), batch * length, d)
        tokens = None if valid is None or bool(valid.all()) else valid.reshape(-1).nonzero().squeeze(1)
        if tokens is not None:          # the FFNs and the router on real tokens only
            streams = streams.index_select(1, tokens)
        z = self.ln2(streams)                                               # [4, M, d]
        if self.router is None:
            update, gates = self.ffn(z.reshape(1, -1, d)).view_as(z), None
        else:
            e = self.ffn(z[: self.ffn.n_experts])                           # [E, M, d]
            time = t0.reshape(-1, d) if tokens is None else t0.reshape(-1, d).index_select(0, tokens)
            gates = self.router(z[-1], time)                                # [M, 3]
            trajectory = torch.einsum("mi,imd->md", gates, e[:N_SPECIALISTS])
            if self.ffn.n_experts > N_SPECIALISTS:
                trajectory = trajectory + e[N_SPECIALISTS]
            update = torch.cat([e[:N_SPECIALISTS], trajectory.unsqueeze(0)])
        update = self.dropout(update)
        if tokens is not None:
            update = update.new_zeros(len(STREAMS), batch * length, d).index_copy(1, tokens, update)
            if gates is not None:
                gates = gates.new_zeros(batch * length, gates.shape[-1]).index_copy(0, tokens, gates)
        gates = None if gates is None else gates.view(batch, length, -1)
        return h + update.view_as(h), gates
