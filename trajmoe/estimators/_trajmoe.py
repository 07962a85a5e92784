"""TrajMoERegressor: the SAMoE network behind a scikit-learn estimator (skorch inside).

The skorch training loop and the inference over visit frames are shared with the neural
baselines (:class:`trajmoe.estimators.NeuralNextLocationEstimator`); this module defines
TrajMoE's parameters and network.
"""

from __future__ import annotations

import numbers
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted

from ..nn import PRESETS, SAMoETransformer
from ..nn.samoe import N_SPECIALISTS, ROUTERS, SELECTORS, STREAMS
from ._neural import NeuralNextLocationEstimator, store_net_params

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
        window (docs/method.rst, "Copy path and rule priors"; not in the paper). The default of earlier
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
        city and zero for a city the model has not trained on (docs/method.rst, "Copy path and rule priors").
    history_prior : bool, default True
        Add the window's visit counts and recency (history frequency's rule) to the
        candidate logits with learned weights modulated by the hidden state; with the
        distance prior the network starts from the combined history + gravity rule. Not
        in the paper.
    history_moves : bool, default True
        With ``history_prior``: also add the user's own moves in the window from the current
        cell (at ``A`` again after ``A -> B``, ``B`` counts one) with a learned weight,
        initialised to :data:`trajmoe.nn.retrieval.MOVES_PRIOR`; ignored without the history
        prior. Chosen on validation users (it won on all three benchmark targets; see the
        results page). Not in the paper; False is the history prior of earlier versions.
    return_scorer : bool or "finetune", default "finetune"
        With ``history_moves`` (ignored without it): add a learned, city-invariant value of
        each cell of the window to its logit, a small MLP (:class:`trajmoe.nn.ReturnScorer`)
        of its visits, recency, moves, distance from the current cell and shares of the
        window, modulated by the hidden state and starting at zero. It can learn what the
        weighted sum of the history prior cannot (a move from the current cell outweighing
        many visits; a distant home not charged the distance decay). ``True``: trained by
        ``fit`` and ``partial_fit``; ``"finetune"``: kept at zero by ``fit`` (pre-training
        on the sources) and trained by ``partial_fit`` only, so that it learns the returns of
        the city being fine-tuned (a model trained by ``fit`` alone scores without it). Not in
        the paper; False is the network of earlier versions. Chosen on validation users
        (against False, Acc@1 / MRR): True raised NYC's (+.008 / +.021) and lowered Gowalla
        Bay Area's Acc@1 (-.007); "finetune" kept NYC's gain (+.007 / +.019) without that
        loss (-.001 / +.002; YJMob100K A -.001 / .000), the best mean over the three targets
        (see the results page, "A learned return scorer").
    learned_weight : float in [0, 1], default 0.5
        Weight of the network's learned terms against the rule priors when it scores cells
        (``predict``, ``predict_topk``, ``target_table``, ``target_ranks``, ``score``): the
        logits are the priors plus ``learned_weight`` times the learned terms (``q . C``, the
        copy scores' ``q . key``, the hidden-state modulation of the distance and history
        priors and of the return scorer), a log-linear pool of the network and the rule it
        starts from; the return scorer's function of the window's features enters at full
        weight, as the priors' own weights do. Training is
        not affected (the loss and ``history_`` score the network as trained), so
        ``set_params`` takes effect at once, without refitting (the value is checked when the
        model scores). 1 = the network as trained (the paper; without priors a weight only
        scales the logits, so the ranking is the same at any positive weight up to float32
        ties of the log-probabilities, and at 0 every cell ties). 0.5 was chosen on
        validation users: fine-tuned on 5 % of a city, the learned terms overrule the priors
        where they should not (see the results page, "Where the transfer goes wrong").
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
        Longer windows are cut (into pieces of ``max_tokens`` stays, each stay but the first a
        target: ``fit`` needs at least 2).
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
    monitor : {"valid_loss", "valid_mrr", "valid_acc1"}, default "valid_loss"
        What early stopping watches on the held-out users (higher is better for the ranking
        metrics, which are recorded in ``history_`` either way); ``fit`` ends with the weights of
        the best epoch.
    validation_fraction : float, default 0.1
        Share held out for early stopping in ``fit`` (0 = no validation): of each city's
        users, or of each user's visits (``validation_split``).
    validation_split : {"users", "time"}, default "users"
        What ``fit`` holds out: ``"users"``, a share of each city's users (the model is
        validated on people it never trained on, as a new city meets it); ``"time"``, each
        user's last ``validation_fraction`` of visits in time, the earlier ones train (the
        split of the next-location literature, e.g. LibCity's 7:1:2 by time per user; see the
        results page, literature baselines). Either way, validation windows do not overlap
        and a held-out window of one stay is not scored. With ``"time"``, held-out visits
        that form no window of ``min_stays`` are in neither set (DataWarning with the count),
        and where none forms a window, fit trains on every visit without validation
        (DataWarning).
    finetune_epochs : int, default 1
        Epochs of every ``partial_fit`` call.
    finetune_lr : float or None, default None
        Learning rate of ``partial_fit``; None = the rate ``fit`` ended with (after its
        step decay), chosen on validation users of Foursquare NYC.
    finetune_batch_size : int or None, default 8
        Windows per batch of ``partial_fit`` (None = ``batch_size``). One epoch on 5 % of a
        city is a few hundred windows; 8 a batch gives it enough steps (better on average over
        the validation users of the three benchmark targets, worse on two of three NYC
        seeds; see ``partial_fit``).
    finetune_frozen : tuple of str, default ("tower",)
        Parts of the network kept fixed by ``partial_fit`` after ``fit`` (names of the
        network's child modules, e.g. ``"tower"``, ``"blocks"``, ``"embed"``); ``()`` fine-tunes
        every weight, as the paper does. The location tower is kept by default: fine-tuned on a
        few users' windows, it moved the candidates of the cells those users visited and cost
        the window's history on other users (see ``partial_fit``).
    clip_grad : float, default 1.0
        Gradient norm clipping (None to disable).
    city_tz : dict of str -> str, optional
        Time zone per city (see :func:`trajmoe.sequences.time_features`). A city without one
        has its tz-aware times read in the zone of the frame that first fitted it
        (``time_zones_``): the same instants give the same local times whatever zone a later
        frame carries them in.
    callbacks : list of skorch callbacks or (name, callback) pairs, optional
        Added after the default callbacks (``finite_loss``, ``epoch_seed``, ``valid_ranking``, ``lr_scheduler`` and
        ``early_stopping`` in ``fit``, ``clip``, ``progress``; see
        :data:`trajmoe.estimators.DEFAULT_CALLBACKS`), e.g. ``[skorch.callbacks.Checkpoint(dirname=...)]`` to save the
        net after every epoch that improves ``valid_loss`` (``fit`` only: ``partial_fit`` holds
        no users out, so a callback monitoring ``valid_loss`` fails there). Copied in fit.
    checkpoint_dir : str or path-like, optional
        ``fit`` writes a checkpoint there after every epoch (skorch's ``Checkpoint``: weights,
        optimizer state and history, and the best weights of early stopping), and a ``fit``
        that finds one of the same run (same data and parameters) resumes it: a fit killed at
        any point and started again ends with the weights of an uninterrupted one (exactly on
        CPU with an int ``random_state``), and a finished run returns its model at once. A
        directory of another run raises a ValueError: give each run (each fold) its own.
        ``partial_fit`` does not checkpoint.
    device : str or torch.device, default "auto"
        "auto" uses CUDA when available; "cpu", "cuda", "cuda:<index>" or "mps" must be a device
        torch has here (else a ValueError says so, before any work).
    random_state : int, RandomState instance or None, default None
        Seeds weights, batch order and the validation split (CPU runs repeat exactly with an
        int; a RandomState gives a new draw on every fit).
    verbose : int, default 0
        1 = an epoch table, and progress bars over batches on a terminal or in a Jupyter
        notebook.
    **kwargs
        Parameters routed to the skorch net, by prefix (see
        :data:`trajmoe.estimators.NET_PREFIXES`): ``optimizer__betas=(0.9, 0.99)``,
        ``iterator_train__num_workers=2``, ``callbacks__early_stopping__patience=5``,
        ``callbacks__lr_scheduler=None`` (drop a default callback), ``module__<name>`` (wins
        over the parameters above). ``train_split`` is not one: validation is by held-out
        users (``validation_fraction``). Checked in fit: an unknown name or ``train_split``
        raises an InvalidParameterError (a ValueError and a TypeError) saying why.

    Attributes
    ----------
    encoder_ : SpatialSemanticEncoder
    cities_ : list of str
        Registered cities; index = the network's city index.
    net_ : skorch.NeuralNet
        The trained network (``net_.module_``) and its history (``net_.history``).
    history_ : DataFrame
        Loss and learning rate per epoch of every training call.
    final_lr_ : float
        Learning rate at the end of ``fit`` (after the schedule's step of the last epoch).
    time_zones_ : dict of str -> str
        Only where fitting frames had tz-aware ``started_at``: the zone each of their cities'
        times came in first, in which they are read later (see ``city_tz``).
    time_forms_ : dict of str -> str
        Per city, the form its times first came in: ``"started_at"`` or ``"day/slot"``
        (:func:`trajmoe.sequences.time_forms`); a frame that gives a city's times in the other
        form (which numbers weekdays differently) gets a DataWarning.

    References
    ----------
    Han et al., "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human Mobility
    Modeling", arXiv 2505.18670; docs/method.rst, "The SAMoE network" and "Training protocol".

    Examples
    --------
    Commuters of two synthetic cities alternate between a home and a work cell (grid cell
    indices, six visits a day, three days). A small network is pre-trained on city ``a``,
    fine-tuned for one epoch on four users of city ``b`` and scored on five new users of
    ``b``:

    >>> import numpy as np, pandas as pd
    >>> from trajmoe import TrajMoERegressor
    >>> rng = np.random.default_rng(0)
    >>> def commuters(city, n_users, prefix=""):
    ...     home, work = rng.integers(0, 20, (2, n_users, 2))
    ...     rows = [(city, f"{prefix}{city}{u}", day, 16 + 6 * k, *(home[u] if k % 2 == 0 else work[u]))
    ...             for u in range(n_users) for day in range(3) for k in range(6)]
    ...     return pd.DataFrame(rows, columns=["city", "user_id", "day", "slot", "x", "y"])
    >>> model = TrajMoERegressor(d_model=16, n_layers=1, max_epochs=1, random_state=0)
    >>> model = model.fit(commuters("a", 20)).partial_fit(commuters("b", 4))
    >>> test = commuters("b", 5, prefix="new-")
    >>> model.predict(test).shape                       # the next cell after every visit
    (90,)
    >>> model.score(test) > 0.5                         # Acc@1: the other cell of the pair
    True
    """

    def __init__(self, encoder=None, preset="small", d_model=None, n_layers=None, n_heads=None,
                 dropout=0.1, experts=True, shared_expert=True, router="star", selector="soft",
                 shared_gate=True, top_k=None, copy_path=False, copy_successor=True, distance_prior=True,
                 history_prior=True, history_moves=True, return_scorer="finetune", learned_weight=0.5, coord_encoding="linear", cell_embedding=False, poi_transform="log1p",
                 time_in_trajectory=False,
                 time_weight=1.0, window_days=3, min_stays=5, max_tokens=144, stride_days=1,
                 lr=1e-3, weight_decay=0.1, batch_size=64, max_epochs=50, patience=3, monitor="valid_loss",
                 validation_fraction=0.1, validation_split="users", finetune_epochs=1, finetune_lr=None,
                 finetune_batch_size=8,
                 finetune_frozen=("tower",),
                 clip_grad=1.0, city_tz=None,
                 callbacks=None, checkpoint_dir=None, device="auto", random_state=None, verbose=0,
                 **kwargs):
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
        self.history_moves = history_moves
        self.return_scorer = return_scorer
        self.learned_weight = learned_weight
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
        self.monitor = monitor
        self.validation_fraction = validation_fraction
        self.validation_split = validation_split
        self.finetune_epochs = finetune_epochs
        self.finetune_lr = finetune_lr
        self.finetune_batch_size = finetune_batch_size
        self.finetune_frozen = finetune_frozen
        self.clip_grad = clip_grad
        self.city_tz = city_tz
        self.callbacks = callbacks
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        store_net_params(self, kwargs)

    _network = SAMoETransformer

    _parameter_constraints: dict = {
        **NeuralNextLocationEstimator._parameter_constraints,
        "preset": [StrOptions(set(PRESETS))],
        "d_model": [Interval(Integral, 1, None, closed="left"), None],
        "n_layers": [Interval(Integral, 1, None, closed="left"), None],
        "n_heads": [Interval(Integral, 1, None, closed="left"), None],
        "experts": ["boolean"],
        "shared_expert": ["boolean"],
        "router": [StrOptions(set(ROUTERS))],
        "selector": [StrOptions(set(SELECTORS))],
        "shared_gate": ["boolean"],
        "top_k": [Interval(Integral, 1, N_SPECIALISTS, closed="both"), None],
        "copy_successor": ["boolean"],
        "history_prior": ["boolean"],
        "history_moves": ["boolean"],
        "return_scorer": ["boolean", StrOptions({"finetune"})],
        "cell_embedding": ["boolean"],
        "time_in_trajectory": ["boolean"],
        "learned_weight": [Interval(Real, 0, 1, closed="both")],
    }

    #: models saved before learned_weight existed scored with the network as trained
    _LEGACY_DEFAULTS = {**NeuralNextLocationEstimator._LEGACY_DEFAULTS, "learned_weight": 1.0,
                        "history_moves": False, "return_scorer": False}

    def _learned_weight(self):
        # checked when used (once per scoring call): set_params after fit is how it is meant to
        # change, and load_model reads it from a file
        def checked():
            validate_parameter_constraints({"learned_weight": self._parameter_constraints["learned_weight"]},
                                           {"learned_weight": self.learned_weight}, caller_name=type(self).__name__)
            return float(self.learned_weight)
        return self._memo("learned_weight", checked)

    def _fit_kept(self):
        # "finetune": the return scorer stays at its zero start through fit (pre-training); a
        # network without one (no moves term) has no such part, and nothing is kept
        return ("return_scorer",) if self.return_scorer == "finetune" else ()

    def _module_params(self):
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
        if self.history_moves and self.history_prior:    # absent when off: as models fitted before it
            params["history_moves"] = True
            if self.return_scorer:                     # True or "finetune"
                params["return_scorer"] = True
        return {f"module__{k}": v for k, v in params.items()}

    def gate_shares(self, X, layer=-1):
        """Share of each specialist expert in the router's gate, by city and hour of day.

        The STAR router mixes the POI, Geo and Pop experts into the trajectory stream with
        weights that sum to 1 at every visit (see :class:`trajmoe.nn.samoe.STARRouter`). This
        averages those weights over the visits of X, per city and local hour of the visit:
        the explainability figure of the paper (:func:`trajmoe.plotting.plot_gate_shares`
        draws it).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame of registered cities. Every visit is read in its evaluation
            window (``window_days`` long, non-overlapping), as :meth:`predict` reads it.
        layer : int, default -1
            Which SAMoE block's router to read (Python indexing: -1 = the last block).

        Returns
        -------
        DataFrame of shape (n_city_hours * 3, 5)
            One row per (city, hour, expert), sorted by city, hour, then expert in the order
            POI, Geo, Pop. Columns: ``city`` (str); ``hour`` (int64, 0..23, local hour of
            the visit's start, from its half-hour slot); ``expert`` (str: ``"poi"``,
            ``"geo"`` or ``"pop"``); ``share`` (float64 in [0, 1], mean gate weight of that
            expert over the visits; the three shares of a (city, hour) sum to 1);
            ``n_visits`` (int64, visits averaged: every visit of X counts once).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        ValueError
            If the network has no router (``experts=False``) or ``layer`` is not an int
            indexing one of its ``n_layers`` blocks.
        trajmoe.exceptions.UnknownCityError
            If X holds a city the model has not registered.

        Examples
        --------
        >>> shares = model.gate_shares(test_visits)                          # doctest: +SKIP
        >>> shares.pivot_table(index="hour", columns="expert", values="share")  # doctest: +SKIP
        """
        check_is_fitted(self, "net_")
        blocks = self.net_.module_.blocks
        if blocks[0].router is None:
            raise ValueError("This model has no router (experts=False): its blocks use one plain FFN.")
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not -len(blocks) <= layer < len(blocks):
            raise ValueError(f"layer must be an int in {-len(blocks)}..{len(blocks) - 1} (the network has "
                             f"{len(blocks)} blocks), got {layer!r}.")
        X = self._visits_of(X)
        captured = []
        # the block's gates [B, L, 3] (its router sees the real tokens only)
        handle = blocks[layer].register_forward_hook(lambda module, args, output: captured.append(output[1]))
        try:
            with self._unseen_cells(X):
                cities = list(self.cities_)
                prep, windows = self._visit_windows(X)
                gates = np.full((len(prep.order), N_SPECIALISTS), np.nan)
                for c, b, width, batch, valid in self._iter_batches(windows):
                    captured.clear()
                    self._forward(batch, self.cities_[c])
                    gates[windows.row[b, :width][valid]] = captured[-1].float().cpu().numpy()[valid]
        finally:
            handle.remove()
        experts = list(STREAMS[:N_SPECIALISTS])
        seen = ~np.isnan(gates[:, 0])
        wide = pd.DataFrame(gates[seen], columns=experts)
        wide.insert(0, "hour", prep.times["slot"].to_numpy(np.int64)[seen] // 2)
        wide.insert(0, "city", np.asarray(cities, dtype=object)[prep.city_index[seen]])
        grouped = wide.groupby(["city", "hour"], sort=True)
        means = grouped[experts].mean()
        means["n_visits"] = grouped.size().astype(np.int64)
        long = means.reset_index().melt(id_vars=["city", "hour", "n_visits"], value_vars=experts,
                                        var_name="expert", value_name="share")
        long["expert"] = pd.Categorical(long["expert"], categories=experts, ordered=True)
        long = long.sort_values(["city", "hour", "expert"], ignore_index=True)
        long["expert"] = long["expert"].astype(str)
        long["city"] = long["city"].astype(str)
        return long[["city", "hour", "expert", "share", "n_visits"]]
