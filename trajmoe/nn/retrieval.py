"""What every next-location network of trajmoe shares: city feature tables, location tower,
dot-product retrieval head, time head and the optional copy path.

A subclass only encodes the token sequence (:meth:`RetrievalNetwork._encode`); the input
embeddings (MODEL.md section 2), the candidate matrix of the current city, the query
``q = W_q LN_f(h)``, the next-gap logits and the copy path are the same for every network, so
TrajMoE and its neural baselines differ only by their sequence encoder.

References
----------
.. [1] Han et al., "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human Mobility
   Modeling", arXiv 2505.18670, sections "Spatial semantic encoder" and "SAMoE" (head).
.. [2] See, Liu, Manning. "Get To The Point: Summarization with Pointer-Generator Networks",
   ACL 2017 (the gated copy path).
"""

from __future__ import annotations

import math
import operator
import re

import torch
from torch import nn

from .embeddings import N_GAPS, N_RANKS, LocationInputEmbedding, TimeEmbedding
from .tower import CrossNetwork, LocationTower

POI_TRANSFORMS = ("raw", "log1p")
#: The copy path's prior biases (recency, successor) are stored divided by this factor: a few
#: scalars among many weights, they would otherwise move by at most about ``lr`` per AdamW step
#: and stay near their zero initialisation for a whole training run.
PRIOR_SCALE = 100.0
_TABLES = ("poi", "coords", "rank")
_CITY_BUFFER = re.compile(r"city(\d+)_(poi|coords|rank)")


def _adopt_city_tables(module, state_dict, prefix, *_):
    """``load_state_dict`` pre-hook: give the city buffers the shapes found in ``state_dict``.

    Cities present in ``state_dict`` but not (or with another ``N``) in the module get placeholder
    buffers of the stored shape, which the normal loading then fills. A city registered in the
    module but absent from ``state_dict`` stays a missing key (an error under ``strict=True``).
    """
    device = module.time.slot.weight.device
    for key, value in state_dict.items():
        name = key[len(prefix) :]
        if key.startswith(prefix) and _CITY_BUFFER.fullmatch(name):
            module.register_buffer(name, torch.empty(value.shape, dtype=value.dtype, device=device))


class RetrievalNetwork(nn.Module):
    r"""Base class of the next-location networks: inputs, candidates and heads.

    ``forward`` embeds the tokens (time embedding ``t0``; POI, Geo and Pop embeddings of the
    tokens' cells), hands them to the subclass's :meth:`_encode`, which returns hidden states
    ``H`` [B, L, d], and computes ``h = LN_f(H)``, ``q = W_q h`` (no bias),
    ``time_logits = Linear(d, 96)(q)`` and the candidates ``C = LocationTower(features)`` [N, d]
    of the batch's city. Locations are scored by ``q . C^T`` (:func:`trajmoe.nn.location_log_probs`).

    Copy path (MODEL.md section 6 remedy, ``copy_path=True``): ``key = W_k h`` (no bias), copy
    scores ``s[b, t, j] = q_t . key_j / sqrt(d) + 100 (r[t - j] + w_succ [x_{j-1} = x_t])`` for
    ``j <= t`` whose input location is a real cell (else ``-inf``), with ``r`` a learned,
    zero-initialised bias per number of stays back (a recency prior that is the same in every
    city) and ``w_succ`` a learned, zero-initialised weight of the successor indicator: stay
    ``j`` came right after an earlier visit to the current cell ``x_t`` (what the user did
    after being here before; a within-window Markov prior, also city-invariant); and a gate
    ``sigmoid(Linear(d, 1)(h))`` = probability of generating from the candidate distribution
    (forced to 1 where no cell can be copied).

    Parameters
    ----------
    n_poi_features : int
        POI features per cell ``P``.
    d_model : int
        Model width ``d``; divisible by 4 (location tower).
    max_len : int
        Longest sequence (learned positions of the time embedding).
    dropout : float
        Dropout of the input embeddings, in [0, 1).
    poi_transform : {"log1p", "raw"}
        Applied to the registered POI features before the input embedding and the tower.
    copy_path : bool
        Add the gated copy path.
    copy_successor : bool, default=True
        With the copy path, add the successor term ``w_succ [x_{j-1} = x_t]`` to its scores.

    Raises
    ------
    ValueError
        On an unknown ``poi_transform``, a non-positive size, ``d_model`` not divisible by 4, or
        ``dropout`` outside [0, 1).

    Notes
    -----
    **City tables.** Cities are registered with :meth:`register_city`; their feature tables are
    persistent buffers ``city{i}_poi`` [N+1, P], ``city{i}_coords`` [N+1, 2], ``city{i}_rank``
    [N+1] (the last row is the out-of-vocabulary row), so they travel with ``state_dict()``,
    ``pickle`` and ``copy.deepcopy``. ``load_state_dict`` adopts the cities and table shapes of the
    loaded dictionary: a freshly constructed model (same hyper-parameters) can load the state of a
    model with any registered cities without registering them first::

        torch.save(model.state_dict(), "weights.pt")
        clone = type(model)(**same_params)
        clone.load_state_dict(torch.load("weights.pt", weights_only=True))

    **Initialisation** (GPT-2): :meth:`_reset_parameters` draws ``nn.Linear`` and
    ``nn.Embedding`` weights from N(0, 0.02), biases 0, LayerNorm (1, 0).

    **Padding.** PAD tokens (location ``-1``) must follow the valid tokens of their row; encoders
    are causal, so they never influence valid positions.
    """

    def __init__(
        self,
        n_poi_features: int,
        d_model: int,
        max_len: int,
        dropout: float,
        poi_transform: str,
        copy_path: bool,
        copy_successor: bool = True,
    ) -> None:
        super().__init__()
        _check_choice("poi_transform", poi_transform, POI_TRANSFORMS)
        for name, value in dict(n_poi_features=n_poi_features, d_model=d_model, max_len=max_len).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if d_model % 4:
            raise ValueError(f"d_model={d_model} must be divisible by 4 (location tower)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_poi_features = n_poi_features
        self.d_model = d_model
        self.poi_transform = poi_transform
        self.time = TimeEmbedding(d_model, max_len)
        self.embed = LocationInputEmbedding(n_poi_features, d_model)
        self.tower = LocationTower(n_poi_features, d_model)
        self.dropout = nn.Dropout(dropout)
        self.ln_f = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.time_head = nn.Linear(d_model, N_GAPS)
        self.copy_key = nn.Linear(d_model, d_model, bias=False) if copy_path else None
        self.copy_gate = nn.Linear(d_model, 1) if copy_path else None
        # learned bias of the copy score by how many stays back a history token lies (0 = current)
        self.copy_recency = nn.Parameter(torch.zeros(max_len)) if copy_path else None
        # learned weight of "this stay followed an earlier visit to the current cell"
        self.copy_successor = nn.Parameter(torch.zeros(())) if copy_path and copy_successor else None
        self.register_load_state_dict_pre_hook(_adopt_city_tables)

    def _reset_parameters(self, std: float = 0.02) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, CrossNetwork):
                module.reset_parameters(std)

    # ------------------------------------------------------------------ city tables
    def register_city(
        self, index: int, poi: torch.Tensor, coords: torch.Tensor, rank: torch.Tensor
    ) -> None:
        """Register (or replace) the feature tables of city ``index``.

        Stores persistent buffers ``city{index}_poi`` [N+1, P] (float), ``city{index}_coords``
        [N+1, 2] (float) and ``city{index}_rank`` [N+1] (int64) on the device and float dtype of the
        model. Row ``N`` is the out-of-vocabulary row (POI zeros, coordinates zeros, rank 0), used
        for input tokens whose cell is unknown; candidates are rows ``0..N-1`` only.

        Parameters
        ----------
        index : int
            City index (>= 0), as passed in the ``city`` argument of :meth:`forward`.
        poi : array-like [N, P]
            POI features of each cell (raw counts for ``poi_transform="log1p"``: non-negative).
        coords : array-like [N, 2]
            Cell centroid coordinates, z-scored within the city.
        rank : array-like of int [N]
            Popularity rank bins 1..8 (0 = unknown is accepted).

        Raises
        ------
        ValueError
            On wrong shapes, non-finite values, negative POI features under ``log1p``, or ranks
            outside 0..8.
        """
        index = operator.index(index)
        if index < 0:
            raise ValueError(f"city index must be >= 0, got {index}")
        float_dtype = self.query.weight.dtype
        device = self.query.weight.device
        poi = torch.as_tensor(poi, dtype=float_dtype, device=device)
        coords = torch.as_tensor(coords, dtype=float_dtype, device=device)
        rank = torch.as_tensor(rank, device=device)
        n = poi.shape[0] if poi.dim() == 2 else -1
        if n < 1 or poi.shape[1] != self.n_poi_features:
            raise ValueError(
                f"poi must have shape [N >= 1, {self.n_poi_features}], got {tuple(poi.shape)}"
            )
        if coords.shape != (n, 2) or rank.shape != (n,):
            raise ValueError(
                f"coords must have shape [{n}, 2] and rank [{n}], got {tuple(coords.shape)} and "
                f"{tuple(rank.shape)}"
            )
        if not (torch.isfinite(poi).all() and torch.isfinite(coords).all()):
            raise ValueError("poi and coords must be finite (no NaN/inf)")
        if self.poi_transform == "log1p" and (poi < 0).any():
            raise ValueError("poi features must be >= 0 with poi_transform='log1p' (raw counts)")
        if rank.is_floating_point() and not torch.equal(rank, rank.round()):
            raise ValueError("rank must hold integer bins 0..8")
        rank = rank.long()
        if ((rank < 0) | (rank >= N_RANKS)).any():
            raise ValueError(f"rank bins must be in 0..{N_RANKS - 1}")
        tables = {
            "poi": torch.cat([poi, poi.new_zeros(1, self.n_poi_features)]),
            "coords": torch.cat([coords, coords.new_zeros(1, 2)]),
            "rank": torch.cat([rank, rank.new_zeros(1)]),
        }
        for name, table in tables.items():
            self.register_buffer(f"city{index}_{name}", table)

    @property
    def cities(self) -> tuple[int, ...]:
        """Indices of the registered cities, ascending."""
        found = (_CITY_BUFFER.fullmatch(name) for name, _ in self.named_buffers(recurse=False))
        return tuple(sorted({int(m[1]) for m in found if m}))

    def n_locations(self, index: int) -> int:
        """Number of real cells ``N`` of city ``index`` (the OOV row excluded).

        Raises
        ------
        ValueError
            If the city is not registered.
        """
        return self._city_tables(index)[0].shape[0] - 1

    def _city_tables(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feature tables (POI transformed) of a registered city, OOV row included: [N+1, .]."""
        if index not in self.cities:
            raise ValueError(
                f"city {index} is not registered (registered: {list(self.cities)}); "
                "call register_city(index, poi, coords, rank) first"
            )
        poi, coords, rank = (getattr(self, f"city{index}_{name}") for name in _TABLES)
        return (torch.log1p(poi) if self.poi_transform == "log1p" else poi), coords, rank

    # ------------------------------------------------------------------ forward
    def _encode(
        self, e_poi: torch.Tensor, e_geo: torch.Tensor, e_pop: torch.Tensor, t0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states [B, L, d] (before ``LN_f``) and router weights [B, L, E] or None.

        ``e_poi``, ``e_geo``, ``e_pop`` are the tokens' embeddings and ``t0`` their time embedding,
        all [B, L, d]; position ``t`` must only see positions ``<= t``.
        """
        raise NotImplementedError

    def forward(
        self,
        location: torch.Tensor,
        slot: torch.Tensor,
        dow: torch.Tensor,
        gap: torch.Tensor,
        city: torch.Tensor,
    ) -> dict[str, torch.Tensor | None]:
        """Encode a single-city batch of right-padded trajectories.

        Parameters
        ----------
        location : LongTensor [B, L]
            City-local cell ids: 0..N-1 real cells, N = out of vocabulary, -1 = PAD (trailing).
        slot : LongTensor [B, L]
            Half-hour slot of day, 0..47.
        dow : LongTensor [B, L]
            Day of week, 1..7 (0 = padding).
        gap : LongTensor [B, L]
            Half-hour slots since the previous stay, 0..95.
        city : LongTensor [B] or int
            City index of every row; all equal (single-city batches).

        Returns
        -------
        dict
            ``"query"`` FloatTensor [B, L, d]; ``"time_logits"`` FloatTensor [B, L, 96];
            ``"candidates"`` FloatTensor [N, d]; ``"location"`` LongTensor [B, L] (the input);
            ``"copy_scores"`` FloatTensor [B, L, L] (``-inf`` where not copyable) or None;
            ``"gate"`` FloatTensor [B, L] in (0, 1] (generation probability) or None;
            ``"gates"`` FloatTensor [B, L, E] router weights of the last layer, or None for
            networks without a router. Time features at PAD positions are ignored.

        Raises
        ------
        ValueError
            If the batch mixes cities, the city is not registered, or ids are out of range.
        """
        poi, coords, rank = self._city_tables(_single_city(city))
        n = poi.shape[0] - 1
        if location.numel() and (location.min() < -1 or location.max() > n):
            raise ValueError(f"location ids must be in -1..{n} (PAD -1, OOV {n}) for this city")
        pad = location < 0
        t0 = self.time(slot.masked_fill(pad, 0), dow.masked_fill(pad, 0), gap.masked_fill(pad, 0))
        token = location.masked_fill(pad, n)
        e_poi, e_geo, e_pop = self.embed(poi[token], coords[token], rank[token])
        hidden, gates = self._encode(e_poi, e_geo, e_pop, t0)
        h = self.ln_f(hidden)
        q = self.query(h)
        out = {
            "query": q,
            "time_logits": self.time_head(q),
            "candidates": self.tower(poi[:n], coords[:n], rank[:n]),
            "location": location,
            "copy_scores": None,
            "gate": None,
            "gates": gates,
        }
        if self.copy_key is not None:
            out["copy_scores"], out["gate"] = self._copy(h, q, location, n)
        return out

    def _copy(
        self, h: torch.Tensor, q: torch.Tensor, location: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy scores [B, L, L] (``-inf`` where masked) and generation gate [B, L]."""
        scores = q @ self.copy_key(h).transpose(1, 2) / math.sqrt(self.d_model)
        length = location.shape[1]
        steps = torch.arange(length, device=h.device)
        back = (steps[:, None] - steps[None, :]).clamp(min=0)
        scores = scores + PRIOR_SCALE * self.copy_recency[back]
        real = (location >= 0) & (location < n)
        if self.copy_successor is not None:
            previous = torch.cat([location.new_full((location.shape[0], 1), -1), location[:, :-1]], dim=1)
            follows = (previous.unsqueeze(1) == location.unsqueeze(2)) & real.unsqueeze(2)   # [B, t, j]
            scores = scores + PRIOR_SCALE * self.copy_successor * follows
        causal = torch.ones(length, length, dtype=torch.bool, device=h.device).tril()
        copyable = causal & real.unsqueeze(1)
        gate = torch.sigmoid(self.copy_gate(h).squeeze(-1)).masked_fill(~copyable.any(-1), 1.0)
        return scores.masked_fill(~copyable, float("-inf")), gate


def _single_city(city) -> int:
    """The one city index of a batch (``city`` is an int or a tensor of equal values)."""
    city = torch.as_tensor(city)
    if city.numel() == 0:
        raise ValueError("city must hold at least one index")
    first = city.reshape(-1)[0]
    if (city != first).any():
        raise ValueError(
            f"a batch must come from ONE city (candidates are per city), got cities "
            f"{sorted(set(city.reshape(-1).tolist()))}"
        )
    return int(first)


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


__all__ = ["POI_TRANSFORMS", "RetrievalNetwork"]
