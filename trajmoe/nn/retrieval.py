"""What every next-location network of trajmoe shares: city feature tables, location tower,
dot-product retrieval head, time head and the optional copy path.

A subclass only encodes the token sequence (:meth:`RetrievalNetwork._encode`); the input
embeddings (docs/method.rst, "Location features"), the candidate matrix of the current city, the query
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

from .._constants import N_DOWS, N_GAPS, N_SLOTS
from .._validation import check_choice
from .embeddings import N_RANKS, LocationInputEmbedding, SinusoidalCoordinates, TimeEmbedding
from .returns import ReturnScorer
from .tower import CrossNetwork, LocationTower

POI_TRANSFORMS = ("raw", "log1p")
#: How cell coordinates enter the input embedding and the location tower: the paper's linear map
#: of z-scored coordinates, or that plus multi-scale sinusoidal features of the metric position.
COORD_ENCODINGS = ("linear", "sinusoidal")
_EDGE_BASE = 500.0        # metres the log-spaced edges of DISTANCE_EDGES scale (one grid cell)
#: Upper edges (metres) of the distance buckets of the distance prior: bucket 0 is the current
#: cell itself, bucket 1 its 4 edge neighbours on a 500 m grid (500 m), bucket 2 the diagonal
#: ones (707 m), then one bucket per factor sqrt(2) up to 150 km; the bucket after the last edge
#: holds farther cells and one more bucket the cells of an unknown current position.
DISTANCE_EDGES = (1.0,) + tuple(_EDGE_BASE * 2 ** ((k + 0.5) / 2) for k in range(16))
N_DISTANCE_BUCKETS = len(DISTANCE_EDGES) + 2
#: Exponent of the gravity prior ``-beta log(d + 250 m)`` the distance buckets start from.
GRAVITY_PRIOR = 1.5
#: Initial weights of the history prior: logit per earlier visit of a cell in the window, and per
#: unit of recency ``1 / (1 + stays since its last visit)`` (history frequency's rule; docs/method.rst,
#: "What the public data shows").
HISTORY_PRIOR = (1.0, 1.0)
#: Initial weight of the history prior's third term (``history_moves=True``): logit per earlier
#: move of the window from the current cell to the candidate (the user's own transitions). Chosen on
#: validation users (quick ablation, seeds 0-2): 4 against 2 gained Acc@1 on all three targets
#: (NYC +.008, YJMob A +.003, Gowalla +.001); 8 gained NYC again (+.010) but lost YJMob A (-.005)
#: and Gowalla (-.007) (docs/results.rst).
MOVES_PRIOR = 4.0
#: The copy path's prior biases (recency, successor) are stored divided by this factor: a few
#: scalars among many weights, they would otherwise move by at most about ``lr`` per AdamW step
#: and stay near their zero initialisation for a whole training run.
PRIOR_SCALE = 100.0
#: The same storage scale for the distance and history priors. They start at a good rule (gravity,
#: history frequency), which a faster scale let noisy early steps undo.
RULE_SCALE = 10.0
_TABLES = ("poi", "coords", "rank")
_CITY_BUFFER = re.compile(r"city(\d+)_(poi|coords|rank|metres)")
#: Per-city learned tables: the residual cell embedding and the ID embeddings of ``location_ids``.
_CITY_PARAMETER = re.compile(r"city(\d+)_(residual|id_in|id_out|id_bias)")


def _adopt_city_tables(module, state_dict, prefix, *_):
    """``load_state_dict`` pre-hook: give the city buffers the shapes found in ``state_dict``.

    Cities present in ``state_dict`` but not (or with another ``N``) in the module get placeholder
    buffers of the stored shape, which the normal loading then fills. A table of the right shape
    and dtype (the module's, for float tables) is kept and filled in place: an optimizer holding its parameter goes on training it
    (early stopping's best weights, a resumed checkpoint). A city registered in the module but
    absent from ``state_dict`` stays a missing key (an error under ``strict=True``).
    """
    device, float_dtype = module.time.slot.weight.device, module.time.slot.weight.dtype
    for key, value in state_dict.items():
        name = key[len(prefix) :]
        if not key.startswith(prefix):
            continue
        current = getattr(module, name, None)
        # float tables take the module's float dtype (loading converts, as for any parameter: a
        # float64 module loads a float32 state), others their stored one
        dtype = float_dtype if value.is_floating_point() else value.dtype
        if current is not None and current.shape == value.shape and current.dtype == dtype:
            continue
        if _CITY_BUFFER.fullmatch(name):
            module.register_buffer(name, torch.empty(value.shape, dtype=dtype, device=device))
        elif _CITY_PARAMETER.fullmatch(name):
            module.register_parameter(name, nn.Parameter(torch.empty(value.shape, dtype=dtype, device=device)))


class RetrievalNetwork(nn.Module):
    r"""Base class of the next-location networks: inputs, candidates and heads.

    ``forward`` embeds the tokens (time embedding ``t0``; POI, Geo and Pop embeddings of the
    tokens' cells), hands them to the subclass's :meth:`_encode`, which returns hidden states
    ``H`` [B, L, d], and computes ``h = LN_f(H)``, ``q = W_q h`` (no bias),
    ``time_logits = Linear(d, 96)(q)`` and the candidates ``C = LocationTower(features)`` [N, d]
    of the batch's city. Locations are scored by ``q . C^T`` (:func:`trajmoe.nn.location_log_probs`).

    Copy path (docs/method.rst, "Copy path and rule priors"; ``copy_path=True``): ``key = W_k h`` (no bias), copy
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
    distance_prior : bool, default=False
        Add a learned, city-invariant function of the metric distance between the current cell
        and every candidate to the candidate logits: ``10 b[k(d)] + (W_d h)[k(d)]`` with ``k(d)``
        the distance bucket of :data:`DISTANCE_EDGES` (log-spaced, metres), ``b`` initialised to
        the gravity prior ``-1.5 log(d + 250 m)`` at the bucket's grid distance (0, 500 m,
        707 m, 1 km, ...), ``W_d`` a linear map of the hidden state (so the decay depends on
        who and when), plus a learned bias per popularity rank bin of the candidate
        (``10 r[rank]``, zero-initialised). Costs O(tokens x cells), like the dot product. Needs
        the cities' metric coordinates.
    coord_encoding : {"linear", "sinusoidal"}, default="linear"
        ``"sinusoidal"``: the input embedding and the location tower also read multi-scale
        sinusoidal features of the cell's metric position (:class:`SinusoidalCoordinates`), so
        that ``query . candidate`` can express proximity. Needs metric coordinates.
    history_prior : bool, default=False
        Add the window's history to the candidate logits: ``w_c(h) count_t(c) + w_r(h)
        recency_t(c)``, with ``count_t(c)`` the visits to ``c`` so far in the window (the
        current one included) and ``recency_t(c) = 1 / (1 + stays since the last of them)``
        (0 if none); ``w = 10 b + W_h h``, ``b`` initialised to :data:`HISTORY_PRIOR`. With the
        distance prior, the network starts from the combined rule "history + gravity" and
        learns where to depart from it. City-invariant; O(tokens x cells).
    history_moves : bool, default=False
        With ``history_prior``: a third term ``w_m(h) moves_t(c)``, the number of earlier moves of
        the window from the current cell to ``c`` (the user's own transitions: at ``A`` again
        after ``A -> B``, ``B`` counts one), ``b_m`` initialised to :data:`MOVES_PRIOR`.
    return_scorer : bool, default=False
        With ``history_moves``: add :class:`~trajmoe.nn.ReturnScorer`'s value of each
        cell of the window (a small MLP of its counts, distance from the current cell and
        shares of the window, modulated by ``h``; zero until trained) to its logit.
        City-invariant; O(tokens x L).
    cell_embedding : bool, default=False
        Add a per-cell residual vector ``R_city[i]`` [N, d] to the location tower's output,
        learned within a city and zero for a city the model has not trained on (docs/method.rst,
        "Copy path and rule priors"), so transfer is unharmed.
    location_ids : bool, default=False
        The literature's baselines: tokens are embedded by a per-city location ID embedding
        ``E_in`` [N+1, d] (plus the time embedding) and candidates are a per-city output ID
        embedding ``E_out`` [N, d] with a bias per cell, instead of the location features. Such a
        model learns one city at a time and cannot transfer.
    tie_embeddings : bool, default=False
        With ``location_ids``: the candidates are the input ID embeddings themselves (``E_out =
        E_in[:N]``, weight tying; Press and Wolf, EACL 2017; Inan et al., ICLR 2017), so that a
        query close to the embedding of a cell of the window ranks that cell high even when the
        cell has few training visits of its own.

    Raises
    ------
    ValueError
        On an unknown ``poi_transform`` or ``coord_encoding``, a non-positive size, ``d_model``
        not divisible by 4, ``dropout`` outside [0, 1), or ``tie_embeddings`` without
        ``location_ids``.

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

    #: Networks pickled before the option existed have no attribute of their own: untied.
    tie_embeddings = False

    def __init__(
        self,
        n_poi_features: int,
        d_model: int,
        max_len: int,
        dropout: float,
        poi_transform: str,
        copy_path: bool,
        copy_successor: bool = True,
        distance_prior: bool = False,
        coord_encoding: str = "linear",
        cell_embedding: bool = False,
        location_ids: bool = False,
        history_prior: bool = False,
        tie_embeddings: bool = False,
        history_moves: bool = False,
        return_scorer: bool = False,
    ) -> None:
        super().__init__()
        check_choice("poi_transform", poi_transform, POI_TRANSFORMS)
        check_choice("coord_encoding", coord_encoding, COORD_ENCODINGS)
        for name, value in dict(n_poi_features=n_poi_features, d_model=d_model, max_len=max_len).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if d_model % 4:
            raise ValueError(f"d_model={d_model} must be divisible by 4 (location tower)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if history_moves and not history_prior:
            raise ValueError("history_moves is a term of the history prior: it needs history_prior=True")
        if return_scorer and not history_moves:
            raise ValueError("return_scorer reads the history prior's three counts: it needs history_moves=True")
        if tie_embeddings and not location_ids:
            raise ValueError("tie_embeddings ties the output ID embeddings to the input ones: "
                             "it needs location_ids=True")
        self.n_poi_features = n_poi_features
        self.d_model = d_model
        self.poi_transform = poi_transform
        self.cell_embedding = cell_embedding
        self.location_ids = location_ids
        self.tie_embeddings = tie_embeddings
        self.time = TimeEmbedding(d_model, max_len)
        self.sinusoidal = SinusoidalCoordinates() if coord_encoding == "sinusoidal" else None
        n_coord = 2 + (self.sinusoidal.n_features if self.sinusoidal is not None else 0)
        self.embed = LocationInputEmbedding(n_poi_features, d_model, n_coord)
        self.tower = LocationTower(n_poi_features, d_model, n_coord_features=n_coord)
        # distance prior: a bias per distance bucket (gravity-initialised), its modulation by the
        # hidden state, and a bias per popularity rank bin of the candidate
        self.distance_bias = nn.Parameter(_gravity_prior() / RULE_SCALE) if distance_prior else None
        self.distance_gate = nn.Linear(d_model, N_DISTANCE_BUCKETS) if distance_prior else None
        self.rank_bias = nn.Parameter(torch.zeros(N_RANKS)) if distance_prior else None
        # history prior: weights of the window's visit counts and recency, and their modulation
        # (and of its moves from the current cell)
        history = HISTORY_PRIOR + ((MOVES_PRIOR,) if history_moves else ())
        self.history_bias = nn.Parameter(torch.tensor(history) / RULE_SCALE) if history_prior else None
        self.history_gate = nn.Linear(d_model, len(history)) if history_prior else None
        # a learned, city-invariant value of each cell of the window (docs/method.rst)
        self.return_scorer = ReturnScorer(d_model, RULE_SCALE) if return_scorer else None
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
        self,
        index: int,
        poi: torch.Tensor,
        coords: torch.Tensor,
        rank: torch.Tensor,
        metres: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        learned: bool = True,
    ) -> bool:
        """Register (or replace) the feature tables of city ``index``.

        Stores persistent buffers ``city{index}_poi`` [N+1, P] (float), ``city{index}_coords``
        [N+1, 2] (float), ``city{index}_rank`` [N+1] (int64) and, when given,
        ``city{index}_metres`` [N+1, 2] (float) on the device and float dtype of the model. Row
        ``N`` is the out-of-vocabulary row (POI zeros, coordinates zeros, rank 0), used for input
        tokens whose cell is unknown; candidates are rows ``0..N-1`` only. With
        ``cell_embedding`` or ``location_ids``, also the city's learned tables (parameters
        ``city{index}_residual`` [N, d] zero-initialised; ``city{index}_id_in`` [N+1, d],
        ``city{index}_id_out`` [N, d] drawn from N(0, 0.02) (none with ``tie_embeddings``),
        ``city{index}_id_bias`` [N] zero).

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
        metres : array-like [N, 2], optional
            Cell centroids in metres relative to the city's centre (easting, northing). Required
            by ``distance_prior`` and ``coord_encoding="sinusoidal"``.
        keep : array-like of int [N], optional
            For a city registered before: the old row of each new cell (-1 for a new cell), so
            that the learned per-city tables keep what they learned when the vocabulary grows.
            Without it, tables of an unchanged size are kept and others are drawn anew.
        learned : bool, default=True
            False: replace the feature tables only. Cells beyond the learned tables' rows (cells
            appended for one prediction) then get a zero residual, the OOV input ID, a zero
            output ID vector and the lowest ID bias.

        Returns
        -------
        bool
            Whether learned parameters were added or replaced (an optimizer must then be built
            anew to train them).

        Raises
        ------
        ValueError
            On wrong shapes, non-finite values, negative POI features under ``log1p``, ranks
            outside 0..8, missing ``metres`` where the network needs them, or a ``keep`` that is
            not one integer per cell in -1..(the earlier N - 1). Nothing is registered then.
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
        if metres is not None:
            metres = torch.as_tensor(metres, dtype=float_dtype, device=device)
            if metres.shape != (n, 2):
                raise ValueError(f"metres must have shape [{n}, 2], got {tuple(metres.shape)}")
            if not torch.isfinite(metres).all():
                raise ValueError("metres must be finite (no NaN/inf)")
            tables["metres"] = torch.cat([metres, metres.new_zeros(1, 2)])
        elif self.distance_bias is not None or self.sinusoidal is not None:
            raise ValueError("this network (distance_prior or sinusoidal coord_encoding) needs the cells' "
                             "metric coordinates: register_city(..., metres=...)")
        if keep is not None:
            keep = torch.as_tensor(keep, device=device)
            old = getattr(self, f"city{index}_poi", None)
            n_old = 0 if old is None else old.shape[0] - 1
            if keep.is_floating_point() or keep.dtype == torch.bool or keep.shape != (n,):
                raise ValueError(f"keep must hold one integer per new cell, shape [{n}], got {keep.dtype} of shape "
                                 f"{tuple(keep.shape)}")
            if old is not None and ((keep < -1) | (keep >= n_old)).any():    # no earlier city: nothing kept
                raise ValueError(f"keep must give each new cell its old row, in 0..{n_old - 1}, or -1 for a new "
                                 f"cell; got values {sorted(set(keep[(keep < -1) | (keep >= n_old)].tolist()))[:5]}")
        for name, table in tables.items():
            self.register_buffer(f"city{index}_{name}", table)
        if metres is None:                        # a table of an earlier registration would linger
            self._buffers.pop(f"city{index}_metres", None)
        return self._register_city_parameters(index, n, keep) if learned else False

    def _register_city_parameters(self, index: int, n: int, keep) -> bool:
        """Create or resize the learned per-city tables; True if parameters changed."""
        shapes = {}
        if self.cell_embedding:
            shapes["residual"] = ((n, self.d_model), 0.0)
        if self.location_ids:
            shapes.update(id_in=((n + 1, self.d_model), 0.02), id_bias=((n,), 0.0))
            if not self.tie_embeddings:
                shapes["id_out"] = ((n, self.d_model), 0.02)
        changed = False
        weight = self.query.weight
        for name, (shape, std) in shapes.items():
            key = f"city{index}_{name}"
            old = getattr(self, key, None)
            if old is not None and old.shape == shape and keep is None:
                continue
            new = weight.new_zeros(shape)
            if std:
                nn.init.normal_(new, std=std)
            if old is not None and keep is not None:
                keep_t = torch.as_tensor(keep, device=new.device, dtype=torch.long)
                rows = torch.cat([keep_t, keep_t.new_full((shape[0] - len(keep_t),), old.shape[0] - 1)]) \
                    if shape[0] > len(keep_t) else keep_t        # the OOV row of id_in keeps its row
                found = (rows >= 0) & (rows < old.shape[0])
                with torch.no_grad():
                    new[found] = old.detach()[rows[found]]
            self.register_parameter(key, nn.Parameter(new))
            changed = True
        return changed
    def unregister_city(self, index: int) -> None:
        """Remove city ``index``: its feature tables and its learned per-city tables.

        For a city registered for one prediction only (``register_city(..., learned=False)``
        of a city the model has not learned: the zero-shot scoring of an unseen city).

        Raises
        ------
        ValueError
            If the city is not registered.
        """
        if index not in self.cities:
            raise ValueError(f"city {index} is not registered (registered: {list(self.cities)})")
        prefix = f"city{index}_"
        for name in [n for n, _ in self.named_buffers(recurse=False) if n.startswith(prefix)]:
            delattr(self, name)
        for name in [n for n, _ in self.named_parameters(recurse=False) if n.startswith(prefix)]:
            delattr(self, name)

    @property
    def cities(self) -> tuple[int, ...]:
        """Indices of the registered cities, ascending."""
        found = (_CITY_BUFFER.fullmatch(name) for name, _ in self.named_buffers(recurse=False))
        return tuple(sorted({int(m[1]) for m in found if m}))

    def may_skip_parameters(self) -> bool:
        """Whether a training step can leave a trainable parameter out of its graph.

        True when more than one city has trainable per-city tables (``cell_embedding``,
        ``location_ids``: a single-city step does not use the others') or when a router keeps
        only its top k experts (the others get no gradient); what data-parallel training needs to
        know (``find_unused_parameters`` of :class:`~torch.nn.parallel.DistributedDataParallel`,
        whose search for unused parameters costs a pass over the autograd graph every step).

        Returns
        -------
        bool
        """
        found = (_CITY_PARAMETER.fullmatch(name) for name, p in self.named_parameters(recurse=False) if p.requires_grad)
        tables = {m[1] for m in found if m}
        routed = any(getattr(part, "top_k", None) is not None for part in self.modules() if part is not self)
        return len(tables) > 1 or routed

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
        poi = torch.log1p(poi) if self.poi_transform == "log1p" else poi
        if self.sinusoidal is not None:
            coords = torch.cat([coords, self.sinusoidal(self._metres(index))], dim=-1)
        return poi, coords, rank

    def _metres(self, index: int) -> torch.Tensor:
        metres = getattr(self, f"city{index}_metres", None)
        if metres is None:
            raise ValueError(f"city {index} was registered without metric coordinates, which this network "
                             "needs (distance_prior or sinusoidal coord_encoding)")
        return metres

    # ------------------------------------------------------------------ forward
    def _encode(
        self, e_poi: torch.Tensor, e_geo: torch.Tensor, e_pop: torch.Tensor, t0: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states [B, L, d] (before ``LN_f``) and router weights [B, L, E] or None.

        ``e_poi``, ``e_geo``, ``e_pop`` are the tokens' embeddings and ``t0`` their time embedding,
        all [B, L, d]; position ``t`` must only see positions ``<= t``. ``valid`` [B, L] marks the
        real (non-PAD) tokens: an encoder may skip work on the others, whose hidden states are
        never scored.
        """
        raise NotImplementedError

    def forward(
        self,
        location: torch.Tensor,
        slot: torch.Tensor,
        dow: torch.Tensor,
        gap: torch.Tensor,
        city: torch.Tensor,
        city_encoding: dict | None = None,
        learned_weight: float = 1.0,
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
        city_encoding : dict, optional
            :meth:`city_encoding` of the batch's city, computed once for many batches while the
            weights do not change (inference); None: computed here (training).
        learned_weight : float, default 1.0
            Weight of the learned terms of the location scores against the rule priors they
            are added to (a log-linear pool of the network and its priors; inference): the
            query ``q`` (hence ``q . C`` and the copy scores' ``q . key``) and the hidden-state
            modulations ``W_d h`` and ``W_h h`` of the distance and history priors (and ``U h``
            of the return scorer) are multiplied by it; the priors' own biases, the
            popularity-bin bias, the return scorer's function of the features and the time
            logits are not. 1 = the network as trained; 0 = its priors alone, with the return
            scorer's value of the features (with the copy path: copy scores of the recency and
            successor terms only, mixed by the learned gate).

        Returns
        -------
        dict
            ``"query"`` FloatTensor [B, L, d]; ``"time_logits"`` FloatTensor [B, L, 96];
            ``"candidates"`` FloatTensor [N, d]; ``"location"`` LongTensor [B, L] (the input);
            ``"copy_scores"`` FloatTensor [B, L, L] (``-inf`` where not copyable) or None;
            ``"gate"`` FloatTensor [B, L] in (0, 1] (generation probability) or None;
            ``"gates"`` FloatTensor [B, L, E] router weights of the last layer (0 at PAD
            positions), or None for networks without a router; ``"candidate_bias"`` FloatTensor [N] (popularity-bin
            bias of the distance prior, ID bias of ``location_ids``) or None;
            ``"distance"`` FloatTensor [B, L, K] per-position values of the distance buckets and
            ``"cell_metres"`` [N+1, 2], or None without the distance prior; ``"history"``
            FloatTensor [B, L, 2] (3 with ``history_moves``) weights of the history prior, or None;
            ``"history_returns"`` FloatTensor [B, L, L] the return scorer's value of the window's
            cells (entry ``j`` of position ``t`` as :func:`history_entries` lays them out; 0 at PAD
            positions), or None; ``"history_entries"``, with it, the four [B, L, L] tensors of
            :func:`history_entries` (``moves=True``) it read at every real position, which
            :func:`history_terms` reuses (``n_cells`` and zeros at PAD positions), else None.
            Time features at PAD positions are ignored.

        Raises
        ------
        ValueError
            If the batch mixes cities, the city is not registered, ids are out of range (location,
            slot 0..47, dow 0..7, gap 0..95 at the real tokens), ``location`` is not an integer
            tensor, the four token tensors differ in shape, or a PAD token comes before a real
            one in a row.
        """
        index = _single_city(city)
        if city_encoding is None:
            city_encoding = self.city_encoding(index)
        elif city_encoding["index"] != index:
            raise ValueError(f"city_encoding is the one of city {city_encoding['index']}, not of city {index}")
        poi, coords, rank = city_encoding["tables"]
        candidates, candidate_bias = city_encoding["candidates"], city_encoding["candidate_bias"]
        n = rank.shape[0] - 1
        _check_tokens(location, slot, dow, gap)
        if location.numel() and (location.min() < -1 or location.max() > n):
            raise ValueError(f"location ids must be in -1..{n} (PAD -1, OOV {n}) for this city")
        pad = location < 0
        t0 = self.time(slot.masked_fill(pad, 0), dow.masked_fill(pad, 0), gap.masked_fill(pad, 0))
        token = location.masked_fill(pad, n)
        if self.location_ids and getattr(self, f"city{index}_id_in", None) is None:
            # a city registered for one prediction (learned=False) and never learned: no known ID
            e_id = self.query.weight.new_zeros(*location.shape, self.d_model)
            e_poi, e_geo, e_pop = e_id, torch.zeros_like(e_id), torch.zeros_like(e_id)
        elif self.location_ids:
            id_in = getattr(self, f"city{index}_id_in")
            learned = id_in.shape[0] - 1        # cells appended for a prediction have no learned ID
            e_id = id_in[torch.where(token < learned, token, learned)]
            e_poi, e_geo, e_pop = e_id, torch.zeros_like(e_id), torch.zeros_like(e_id)
        else:
            e_poi, e_geo, e_pop = self.embed(poi[token], coords[token], rank[token])
        hidden, gates = self._encode(e_poi, e_geo, e_pop, t0, ~pad)
        h = self.ln_f(hidden)
        q = self.query(h)
        time_logits = self.time_head(q)
        if learned_weight != 1.0:
            q = learned_weight * q
        out = {
            "query": q,
            "time_logits": time_logits,
            "candidates": candidates,
            "candidate_bias": candidate_bias,
            "location": location,
            "copy_scores": None,
            "gate": None,
            "gates": gates,
            "distance": None,
            "cell_metres": None,
            "history": None,
            "history_returns": None,
            "history_entries": None,
        }
        if self.history_bias is not None:
            out["history"] = RULE_SCALE * self.history_bias + learned_weight * self.history_gate(h)
        scorer = getattr(self, "return_scorer", None)             # networks pickled before it have none
        if scorer is not None and not scorer.is_idle():
            out["history_returns"], out["history_entries"] = self._score_returns(
                location, n, h, learned_weight, getattr(self, f"city{index}_metres", None))
        if self.distance_bias is not None:
            out["distance"] = RULE_SCALE * self.distance_bias + learned_weight * self.distance_gate(h)
            out["cell_metres"] = self._metres(index)
        if self.copy_key is not None:
            out["copy_scores"], out["gate"] = self._copy(h, q, location, n)
        return out

    def _score_returns(self, location, n_cells, h, learned_weight, metres):
        """The return scorer's value of every window cell at every real position: FloatTensor
        [B, L, L], entry ``j`` of position ``t`` aligned with :func:`history_entries` (0 where it
        holds no cell, and at PAD positions); and the entries it read, as [B, L, L] tensors."""
        rows, cols = torch.nonzero(location >= 0, as_tuple=True)
        entries = history_entries(location, rows, cols, n_cells, moves=True)
        features = ReturnScorer.features(*entries, location[rows, cols], cols, metres, n_cells)
        value = self.return_scorer(features, h[rows, cols], entries[0] < n_cells, learned_weight)
        grid = location.shape + location.shape[1:]
        dense = tuple(t.new_full(grid, n_cells if t.dtype == torch.long else 0).index_put_((rows, cols), t)
                      for t in (value, *entries))
        return dense[0], dense[1:]

    def city_encoding(self, city) -> dict:
        """What :meth:`forward` computes of a city whatever the tokens.

        The feature tables (POI transformed, sinusoidal coordinates), the candidates ``C``
        [N, d] (location tower, or ID embeddings) and their bias. At inference, where the weights
        do not change, compute it once per city and hand it to every :meth:`forward` of that city
        instead of running the location tower for every batch.

        Parameters
        ----------
        city : int or LongTensor
            City index (as in :meth:`forward`).

        Returns
        -------
        dict
            ``"index"`` (int), ``"tables"`` (POI [N+1, P], coordinates [N+1, .], rank [N+1]),
            ``"candidates"`` FloatTensor [N, d] and ``"candidate_bias"`` FloatTensor [N] or None,
            as :meth:`forward` returns them.
        """
        index = _single_city(city)
        poi, coords, rank = self._city_tables(index)
        n = rank.shape[0] - 1
        if self.location_ids and getattr(self, f"city{index}_id_in", None) is None:
            # a city never learned (registered for one prediction): every cell alike
            candidates = self.query.weight.new_zeros(n, self.d_model)
            candidate_bias = self.query.weight.new_zeros(n)
        elif self.location_ids:
            id_bias = getattr(self, f"city{index}_id_bias")
            # the output table, or the input one without its out-of-vocabulary row (tie_embeddings)
            id_out = (getattr(self, f"city{index}_id_in")[:-1] if self.tie_embeddings
                      else getattr(self, f"city{index}_id_out"))
            learned = id_out.shape[0]          # cells appended for a prediction have no learned ID
            candidates = torch.cat([id_out, id_out.new_zeros(n - learned, id_out.shape[1])])
            candidate_bias = torch.cat([id_bias, id_bias.detach().min().expand(n - learned)]) if n > learned else id_bias
        else:
            candidates = self.tower(poi[:n], coords[:n], rank[:n])
            candidate_bias = None
            if self.cell_embedding and getattr(self, f"city{index}_residual", None) is not None:
                residual = getattr(self, f"city{index}_residual")
                candidates = candidates + torch.cat([residual, residual.new_zeros(n - residual.shape[0], residual.shape[1])])
        if self.distance_bias is not None:
            rank_bias = RULE_SCALE * self.rank_bias[rank[:n]]
            candidate_bias = rank_bias if candidate_bias is None else candidate_bias + rank_bias
        return {"index": index, "tables": (poi, coords, rank), "candidates": candidates,
                "candidate_bias": candidate_bias}

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


def _gravity_prior() -> torch.Tensor:
    """Initial values of the distance buckets: ``-GRAVITY_PRIOR log(d + 250 m)`` at each bucket's
    grid distance ``d``, shifted so that the current cell scores 0; the unknown-position bucket
    starts at 0.

    The grid distance of bucket ``k >= 1`` is ``500 sqrt(2)^(k-1)`` m, the geometric middle of its
    edges and the distance of the centroids it holds on a 500 m grid (500 m for the edge
    neighbours, 707 m for the diagonal ones, 1 km, ...); bucket 0 (the current cell) is 0 m.
    Before commit 3ba0611 the buckets started at their lower edge, which gave the edge neighbours
    (lower edge 1 m) the current cell's value: on Gowalla Bay Area validation users (quick
    benchmark, seeds 0-2) the fine-tuned model then ranked the current cell first on 69 % of the
    targets that stay in it, against 76 % now, and Acc@1 .210 against .224 (MRR .321 against .330);
    see the results page, "Where the transfer goes wrong".
    """
    grid = _EDGE_BASE * 2 ** (torch.arange(len(DISTANCE_EDGES), dtype=torch.float64) / 2)
    distance = torch.cat([grid.new_zeros(1), grid])
    prior = -GRAVITY_PRIOR * (torch.log(distance + 250.0) - math.log(250.0))
    return torch.cat([prior, prior.new_zeros(1)]).float()


def distance_buckets(current: torch.Tensor, metres: torch.Tensor) -> torch.Tensor:
    """Distance bucket of every candidate from each current cell.

    Parameters
    ----------
    current : LongTensor [n]
        Current cell of each position, 0..N (N = out of vocabulary: unknown position).
    metres : FloatTensor [N+1, 2]
        Cell centroids in metres (row N is the OOV row).

    Returns
    -------
    LongTensor [n, N]
        Bucket index in 0..K-1 (:data:`N_DISTANCE_BUCKETS` = K); K-1 where the current position
        is unknown.

    Notes
    -----
    The rows are computed once per distinct current cell and copied to the positions that share
    it. The edges of :data:`DISTANCE_EDGES` after the first lie a factor ``sqrt(2)`` apart, so the
    bucket of a distance ``d > 1`` m is ``1 + clip(ceil(log2(d^2 / 500^2) - 1/2), 0, 16)``,
    computed from the squared distance without a square root or a search over the edges (:func:`torch.bucketize` over the edges gives the
    same buckets, 2-3x slower; they can differ only for a distance within float32 rounding of an
    edge, which no two centroids of a 500 m grid are: ``d / 500 = sqrt(integer)``). Squared
    distances are computed in float32 at least (float16 overflows beyond 256 m); a distance that
    is not a number (NaN or infinite coordinates, which :meth:`RetrievalNetwork.register_city`
    refuses) falls in the bucket of farther cells.
    """
    distinct, inverse = torch.unique(current, return_inverse=True)
    return _bucket_rows(distinct, metres).long()[inverse]


def add_distance_prior(
    logits: torch.Tensor, values: torch.Tensor, current: torch.Tensor, metres: torch.Tensor
) -> torch.Tensor:
    """Add each position's value of every candidate's distance bucket to its logits, in place.

    ``logits += values.gather(1, distance_buckets(current, metres))``, the same float additions
    (``values`` are cast to the dtype of ``logits`` first, which changes nothing in float32; under
    bf16 autocast the logits are bf16). Under autograd it is computed so; otherwise (inference)
    without the ``[n, N]`` index of :func:`distance_buckets`: the positions that share a current
    cell read their values through that cell's one row of buckets, which on YJMob100K city A
    (43,264 cells, 92 positions a score block, about 45 distinct current cells) writes a fraction
    of the memory (docs: "Speed on one machine").

    Parameters
    ----------
    logits : FloatTensor [n, N]
        Scores of the ``N`` candidates of ``n`` positions; changed in place.
    values : FloatTensor [n, K]
        Value of each distance bucket (:data:`N_DISTANCE_BUCKETS` = K) at each position.
    current : LongTensor [n]
        Current cell of each position, 0..N (N = unknown position).
    metres : FloatTensor [N+1, 2]
        Cell centroids in metres (row N is the OOV row).

    Returns
    -------
    FloatTensor [n, N]
        ``logits``.
    """
    if torch.is_grad_enabled() and (logits.requires_grad or values.requires_grad):
        return logits.add_(values.gather(1, distance_buckets(current, metres)).to(logits.dtype))
    distinct, inverse = torch.unique(current, return_inverse=True)
    rows = _bucket_rows(distinct, metres)
    order = torch.argsort(inverse, stable=True)
    ends = torch.bincount(inverse, minlength=len(distinct)).cumsum(0).tolist()
    start = 0
    for row, end in zip(rows, ends):
        if end - start == 1:           # one position: a vector, no index_add_
            i = order[start]
            logits[i].add_(values[i].index_select(0, row))
        else:
            share = order[start:end]
            logits.index_add_(0, share, values[share].index_select(1, row).to(logits.dtype))
        start = end
    return logits


def _bucket_rows(distinct: torch.Tensor, metres: torch.Tensor) -> torch.Tensor:
    """Buckets of every candidate from each of the distinct current cells: IntTensor [U, N]
    (see :func:`distance_buckets`)."""
    n_cells = metres.shape[0] - 1
    metres = metres.to(torch.promote_types(metres.dtype, torch.float32))     # squares of km overflow float16
    x, y = metres[:n_cells].T.contiguous()
    rows = bucket_grid(metres[distinct], x, y)
    unknown = distinct >= n_cells
    if bool(unknown.any()):
        rows[unknown] = N_DISTANCE_BUCKETS - 1
    return rows


def bucket_grid(here: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Distance bucket of every candidate from each of a few positions (see
    :func:`distance_buckets`; every position known): IntTensor [U, M].

    ``here`` FloatTensor [U, 2] the positions' centroids (metres, float32 or wider); ``x``, ``y``
    FloatTensor [M] the candidates' centroids. Element by element the same float operations
    whatever U and M, so any subset of candidates gets the buckets of the whole row.
    """
    return squared_buckets_((here[:, :1] - x).square_().add_((here[:, 1:] - y).square_()))


def squared_buckets_(squared: torch.Tensor) -> torch.Tensor:
    """Distance bucket (IntTensor, 0..K-2) of squared distances in m^2, computed in place of
    ``squared`` (float32 or wider); NaN and infinity fall in the farthest distance bucket.

    Non-decreasing in the squared distance: the buckets of the distances between two bounds lie
    between the buckets of the bounds.
    """
    squared.nan_to_num_(nan=float("inf"), posinf=float("inf"))     # no distance to measure: the farther bucket
    near = squared <= DISTANCE_EDGES[0] ** 2
    rows = squared.div_(_EDGE_BASE**2).log2_().sub_(0.5).ceil_().clamp_(0, len(DISTANCE_EDGES) - 1).add_(1).int()
    return rows.masked_fill_(near, 0)


def dense_entries(ids: torch.Tensor, values, n_cells: int) -> tuple[torch.Tensor, ...]:
    """Per-entry values (:func:`history_entries`, :func:`history_terms`) over every cell.

    Parameters
    ----------
    ids : LongTensor [n, L]
        The entries' cells, ``n_cells`` where an entry holds none.
    values : sequence of FloatTensor [n, L]
        Values of the entries.
    n_cells : int
        Number of candidate cells ``N``.

    Returns
    -------
    tuple of FloatTensor [n, N]
        Each value at its cell, 0 at the cells of no entry.
    """
    zeros = values[0].new_zeros(len(ids), n_cells + 1)                                # junk column N
    return tuple(zeros.scatter(1, ids, value)[:, :n_cells] for value in values)


def first_occurrence(ids: torch.Tensor) -> torch.Tensor:
    """Position of the first entry of the same value in its row, for every entry.

    Parameters
    ----------
    ids : LongTensor [n, L]

    Returns
    -------
    LongTensor [n, L]
        ``first[i, j] = min{j' : ids[i, j'] == ids[i, j]}``: a slot per distinct value of a row,
        so that sums over the entries of one value (``scatter_add_`` into ``[n, L]``) need no
        column per cell of the city.

    Examples
    --------
    >>> first_occurrence(torch.tensor([[5, 3, 5, 5, 3]])).tolist()
    [[0, 1, 0, 0, 1]]
    """
    if ids.shape[1] == 0:
        return ids.clone()
    value, perm = torch.sort(ids, dim=1, stable=True)                   # equal values: j ascending
    start = torch.ones_like(value, dtype=torch.bool)
    start[:, 1:] = value[:, 1:] != value[:, :-1]
    steps = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    group_start = torch.where(start, steps, 0).cummax(dim=1).values   # sorted position of the group's first
    return torch.empty_like(ids).scatter_(1, perm, perm.gather(1, group_start))


def history_entries(location: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, n_cells: int,
                    moves: bool = False):
    """Visit counts, recency (and moves) of the cells of the window so far, for selected positions:
    one entry per visited cell (:func:`dense_entries` spreads them over every cell).

    Parameters
    ----------
    location : LongTensor [B, L]
        Input cells (0..N-1 real, N out of vocabulary, -1 PAD).
    rows, cols : LongTensor [n]
        Batch index and position of each selected position.
    n_cells : int
        Number of candidate cells ``N``.
    moves : bool, default False
        Also return the moves of the window from the current cell.

    Returns
    -------
    ids : LongTensor [n, L]
        A cell visited at positions ``<= cols`` of the row at the first history position holding
        it; ``n_cells`` at every other entry (a later visit of the same cell, a position after
        ``cols``, PAD or out of vocabulary).
    count, recency : FloatTensor [n, L]
        Visits to the entry's cell at positions ``<= cols`` of the row; ``1 / (1 + cols - j)``
        for the last such visit ``j`` (0 where ``ids == n_cells``).
    moves : FloatTensor [n, L]
        Only with ``moves``: how many times an earlier visit to the current cell (the cell at
        ``cols``) was followed by a visit to the entry's cell, ``#{k < cols : x_k = x_cols,
        x_{k+1} = c}``.

    Examples
    --------
    >>> ids, count, recency, moves = history_entries(torch.tensor([[4, 7, 4, 7, 4]]), torch.tensor([0]),
    ...                                              torch.tensor([4]), 10, moves=True)
    >>> ids.tolist(), count.tolist(), moves.tolist()
    ([[4, 7, 10, 10, 10]], [[3.0, 2.0, 0.0, 0.0, 0.0]], [[0.0, 2.0, 0.0, 0.0, 0.0]])
    """
    history = location[rows]                                                     # [n, L]
    steps = torch.arange(history.shape[1], device=history.device)
    real = (steps[None, :] <= cols[:, None]) & (history >= 0) & (history < n_cells)
    index = history.masked_fill(~real, n_cells)
    first = first_occurrence(index)
    ones = real.to(torch.float32)
    count = torch.zeros_like(ones).scatter_add_(1, first, ones).gather(1, first)
    recent = ones / (1.0 + (cols[:, None] - steps[None, :]).clamp_min(0))
    recency = torch.zeros_like(ones).scatter_reduce_(1, first, recent, "amax").gather(1, first)
    keep = real & (first == steps[None, :])
    out = (index.masked_fill(~keep, n_cells), count * keep, recency * keep)
    if not moves:
        return out
    # a move k -> k + 1 from the current cell, k < cols: counted at the entry of the cell of k + 1
    left = (index[:, :-1] == index.gather(1, cols[:, None])) & real[:, :-1] & real[:, 1:]
    arrived = torch.zeros_like(ones)
    arrived[:, 1:] = left.to(ones.dtype)
    moved = torch.zeros_like(ones).scatter_add_(1, first, arrived).gather(1, first)
    return out + (moved * keep,)


def history_terms(out: dict, rows: torch.Tensor, cols: torch.Tensor, n_cells: int):
    """The history prior's entries of selected positions: cells, weights and features (the
    entries ``out["history_entries"]`` kept from the forward pass where it has them, else
    :func:`history_entries` of ``out["location"]``).

    A cell ``c`` of the window adds ``sum_f weights[:, f] * features[f]`` at its entry to its
    logit, in that order (the dense and sparse scoring paths add them so, bit for bit).

    Parameters
    ----------
    out : dict
        Output of :meth:`RetrievalNetwork.forward` with a history prior.
    rows, cols : LongTensor [n]
        Batch index and position of each selected position.
    n_cells : int
        Number of candidate cells ``N``.

    Returns
    -------
    ids : LongTensor [n, L]
        As :func:`history_entries`.
    weights : FloatTensor [n, F]
        The prior's weights (``out["history"]``), with a column of ones for the return scorer.
    features : list of FloatTensor [n, L]
        The entries' features: count, recency (, moves) (, the return scorer's value,
        ``out["history_returns"]``).
    """
    weights = out["history"][rows, cols]
    kept = out.get("history_entries")              # read by the return scorer in the forward pass
    if kept is not None:
        ids, *features = (t[rows, cols] for t in kept)
    else:
        ids, *features = history_entries(out["location"], rows, cols, n_cells, moves=weights.shape[1] > 2)
    extra = out.get("history_returns")
    if extra is not None:
        weights = torch.cat([weights, weights.new_ones(len(rows), 1)], 1)
        features.append(extra[rows, cols].to(features[0].dtype))
    return ids, weights, features


def _check_tokens(location, slot, dow, gap) -> None:
    """ValueError where the token tensors of a batch break :meth:`RetrievalNetwork.forward`'s
    contract: integer ids of one shape [B, L], PAD (-1) only after a row's real tokens, time
    ids in range at the real tokens."""
    if location.is_floating_point() or location.dtype == torch.bool or location.dim() != 2:
        raise ValueError(f"location must be an integer tensor [B, L], got {location.dtype} of shape "
                         f"{tuple(location.shape)}")
    for name, ids in (("slot", slot), ("dow", dow), ("gap", gap)):
        if ids.shape != location.shape:
            raise ValueError(f"{name} has shape {tuple(ids.shape)}, and location {tuple(location.shape)}: give one "
                             "id per token")
    pad = location < 0
    late = pad[:, :-1] & ~pad[:, 1:]
    if bool(late.any()):
        rows = sorted(set(late.nonzero()[:, 0].tolist()))
        raise ValueError(f"rows {rows[:5]} have a PAD token (location -1) before a real one: pad on the right, "
                         "after a row's real tokens (the encoders are causal)")
    for name, ids, size in (("slot", slot, N_SLOTS), ("dow", dow, N_DOWS), ("gap", gap, N_GAPS)):
        real = ids.masked_fill(pad, 0)                  # no boolean indexing on the hot path
        if real.numel() and (real.min() < 0 or real.max() >= size):
            raise ValueError(f"{name} ids must be in 0..{size - 1} at the real tokens, got values from "
                             f"{int(ids[~pad].min())} to {int(ids[~pad].max())}")


def _single_city(city) -> int:
    """The one city index of a batch (``city`` is an int or a tensor of equal values)."""
    city = torch.as_tensor(city)
    if city.numel() == 0:
        raise ValueError("city must hold at least one index")
    if city.is_floating_point() and not torch.equal(city, city.round()):
        raise ValueError(f"city must hold integer indices, got {city.reshape(-1)[:5].tolist()}")
    first = city.reshape(-1)[0]
    if (city != first).any():
        raise ValueError(
            f"a batch must come from ONE city (candidates are per city), got cities "
            f"{sorted(set(city.reshape(-1).tolist()))}"
        )
    return int(first)


__all__ = ["COORD_ENCODINGS", "DISTANCE_EDGES", "HISTORY_PRIOR", "MOVES_PRIOR", "N_DISTANCE_BUCKETS", "POI_TRANSFORMS",
           "RULE_SCALE", "RetrievalNetwork", "add_distance_prior", "dense_entries", "distance_buckets", "first_occurrence",
           "history_entries", "history_terms"]
