"""TrajMoERegressor: the SAMoE network behind a scikit-learn estimator (skorch inside).

The skorch training loop and the inference over visit frames are shared with the neural
baselines (:class:`trajmoe.neural.NeuralNextLocationEstimator`); this module defines
TrajMoE's parameters and network.
"""

from __future__ import annotations

from .neural import NeuralNextLocationEstimator
from .nn import PRESETS, SAMoETransformer

__all__ = ["TrajMoERegressor"]


class TrajMoERegressor(NeuralNextLocationEstimator):
    """TrajMoE: next-location prediction in any city with a spatially-aware MoE Transformer.

    The network (:class:`trajmoe.nn.SAMoETransformer`) regresses a query vector into the
    location-embedding space and ranks the current city's cells by dot product; hence the
    name, although predictions are location labels. Cities enter only through their
    feature tables (:class:`SpatialSemanticEncoder`), so one network serves any city:
    ``fit`` pre-trains on every city of X, ``partial_fit`` fine-tunes (one epoch by
    default) and registers new cities on the fly.

    Parameters
    ----------
    encoder : SpatialSemanticEncoder or None, default None
        Template of the location features (cloned in fit); None = default encoder (500 m).
    preset : {"small", "base", "ultra"}, default "small"
        Network size: small = 2 layers, d 64, 4 heads (CPU); base = 4 x 512 x 4 heads and
        ultra = 12 x 768 x 6 heads (the paper's sizes, for GPUs).
    d_model, n_layers, n_heads : int or None, default None
        Override the preset.
    dropout : float, default 0.1
    experts, shared_expert : bool, default True
        Ablations: plain FFN instead of the mixture; no shared expert.
    router : {"star", "spatial", "temporal"}, default "star"
    selector : {"soft", "hard", "none"}, default "soft"
    shared_gate : bool, default True
        Spatial and temporal gates share weights (reference code) or not (paper).
    top_k : int or None, default None
        None: dense gating (the paper). 1..3: sparse noisy top-k gating of the three
        specialist experts (Shazeer et al. 2017; the ablation benchmark's sparse variant).
    copy_path : bool, default False
        Pointer path that lets the network put probability on cells already in the
        window (MODEL.md section 6 remedy; not in the paper). The default of earlier
        versions; with the history prior it lost on the validation users of all three
        benchmark targets (see the results page).
    copy_successor : bool, default True
        With the copy path, a learned bias for history stays that followed an earlier visit
        to the current cell (what the user did after being here before).
    distance_prior : bool, default True
        Add a learned, city-invariant function of the distance (metres) between the
        current cell and every candidate to the candidate logits, modulated by the hidden
        state, plus a bias per popularity bin (see :class:`trajmoe.nn.RetrievalNetwork`).
        Not in the paper (False = the paper's network); chosen on validation users
        (see the results page).
    coord_encoding : {"linear", "sinusoidal"}, default "linear"
        ``"sinusoidal"``: multi-scale sinusoidal features of each cell's position in
        metres (Space2Vec, Mai et al., ICLR 2020) join the z-scored coordinates in the
        input embedding and the location tower. ``"linear"`` = the paper's (it won on the
        validation users of all three benchmark targets; see the results page).
    cell_embedding : bool, default False
        Add a per-cell residual embedding to the location tower's output, learned within a
        city and zero for a city the model has not trained on (MODEL.md section 6 remedy).
    history_prior : bool, default True
        Add the window's visit counts and recency (history frequency's rule) to the
        candidate logits with learned weights modulated by the hidden state; with the
        distance prior the network starts from the combined history + gravity rule. Not
        in the paper.
    poi_transform : {"log1p", "raw"}, default "log1p"
    time_in_trajectory : bool, default False
        Add the time embedding to the trajectory stream too.
    time_weight : float, default 1.0
        Weight of the next-gap cross-entropy in the loss.
    window_days : int, default 3
        Window length in days.
    min_stays : int, default 5
        Windows with fewer visits are not trained on nor evaluated.
    max_tokens : int, default 144
        Longer windows are cut.
    stride_days : int, default 1
        Training windows start every ``stride_days`` days.
    lr : float, default 1e-3
        AdamW learning rate, for pre-training and fine-tuning alike (the paper's 3e-4 with
        batch 32 is for the base preset on GPUs; 1e-3 with batch 64 was chosen for the small
        CPU preset on validation users of Foursquare NYC).
    weight_decay : float, default 0.1
        On matrices only.
    batch_size : int, default 64
        Windows per (single-city) batch.
    max_epochs : int, default 50
        Pre-training epochs at most (early stopping on held-out users).
    patience : int, default 3
        Epochs without validation improvement before stopping.
    validation_fraction : float, default 0.1
        Share of each city's users held out for early stopping in ``fit``.
    finetune_epochs : int, default 1
        Epochs of every ``partial_fit`` call.
    finetune_lr : float or None, default None
        Learning rate of ``partial_fit``; None = the rate ``fit`` ended with (after its
        step decay), chosen on validation users of Foursquare NYC.
    clip_grad : float, default 1.0
        Gradient norm clipping (None to disable).
    city_tz : dict of str -> str, optional
        Time zone per city (see :func:`trajmoe.sequences.time_features`).
    device : str, default "auto"
        "auto" uses CUDA when available.
    random_state : int or None, default None
        Seeds weights, batch order and the validation split (CPU runs repeat exactly).
    verbose : int, default 0
        1 = an epoch table, and progress bars over batches when writing to a terminal.

    Attributes
    ----------
    encoder_ : SpatialSemanticEncoder
    cities_ : list of str
        Registered cities; index = the network's city index.
    net_ : skorch.NeuralNet
        The trained network (``net_.module_``) and its history.

    References
    ----------
    Han et al., "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human Mobility
    Modeling", arXiv 2505.18670; MODEL.md sections 3-4.

    Examples
    --------
    >>> from trajmoe import TrajMoERegressor                     # doctest: +SKIP
    >>> model = TrajMoERegressor(random_state=0)                  # doctest: +SKIP
    >>> model.fit(source_visits).partial_fit(target_visits_5pct)  # doctest: +SKIP
    >>> model.predict(target_test)                                # doctest: +SKIP
    """

    def __init__(self, encoder=None, preset="small", d_model=None, n_layers=None, n_heads=None,
                 dropout=0.1, experts=True, shared_expert=True, router="star", selector="soft",
                 shared_gate=True, top_k=None, copy_path=False, copy_successor=True, distance_prior=True,
                 history_prior=True, coord_encoding="linear", cell_embedding=False, poi_transform="log1p",
                 time_in_trajectory=False,
                 time_weight=1.0, window_days=3, min_stays=5, max_tokens=144, stride_days=1,
                 lr=1e-3, weight_decay=0.1, batch_size=64, max_epochs=50, patience=3,
                 validation_fraction=0.1, finetune_epochs=1, finetune_lr=None, clip_grad=1.0, city_tz=None,
                 device="auto", random_state=None, verbose=0):
        self.encoder = encoder
        self.preset = preset
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.experts = experts
        self.shared_expert = shared_expert
        self.router = router
        self.selector = selector
        self.shared_gate = shared_gate
        self.top_k = top_k
        self.copy_path = copy_path
        self.copy_successor = copy_successor
        self.distance_prior = distance_prior
        self.coord_encoding = coord_encoding
        self.cell_embedding = cell_embedding
        self.history_prior = history_prior
        self.poi_transform = poi_transform
        self.time_in_trajectory = time_in_trajectory
        self.time_weight = time_weight
        self.window_days = window_days
        self.min_stays = min_stays
        self.max_tokens = max_tokens
        self.stride_days = stride_days
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.finetune_epochs = finetune_epochs
        self.finetune_lr = finetune_lr
        self.clip_grad = clip_grad
        self.city_tz = city_tz
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    _network = SAMoETransformer
    _preset_sizes = True

    def _module_params(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}.")
        params = dict(PRESETS[self.preset])
        for name in ("d_model", "n_layers", "n_heads"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        params.update(max_len=self.max_tokens, dropout=self.dropout, experts=self.experts,
                      shared_expert=self.shared_expert, router=self.router, selector=self.selector,
                      shared_gate=self.shared_gate, top_k=self.top_k, copy_path=self.copy_path, copy_successor=self.copy_successor,
                      distance_prior=self.distance_prior, coord_encoding=self.coord_encoding,
                      cell_embedding=self.cell_embedding, history_prior=self.history_prior,
                      poi_transform=self.poi_transform, time_in_trajectory=self.time_in_trajectory)
        return {f"module__{k}": v for k, v in params.items()}
