"""The paper's neural baselines as estimators: LSTM and plain Transformer next-location models.

They share everything with :class:`TrajMoERegressor` but the sequence encoder: the same
windows, location features (:class:`SpatialSemanticEncoder`), location tower, dot-product
retrieval head, loss, training loop (skorch) and evaluation, so a comparison isolates the
SAMoE architecture. Like TrajMoE they serve any city and can be pre-trained on several cities
and fine-tuned with ``partial_fit``; the paper trains them on the target city only.

References
----------
Han et al., arXiv 2505.18670, v2 Table 2 (LSTM .172 and Transformer .156 Acc@1 against .243
for the single-city TrajMoE, 6 US cities).
"""

from __future__ import annotations

from numbers import Integral

from sklearn.utils._param_validation import Interval

from ..nn import LSTMNetwork, TransformerNetwork
from ._neural import NeuralNextLocationEstimator, store_net_params

__all__ = ["LSTMRegressor", "TransformerRegressor"]

_SHARED_DOC = """
    Parameters
    ----------
    encoder : SpatialSemanticEncoder or None, default None
        Template of the location features (cloned in fit); None = default encoder (500 m).
    d_model : int, default 64
        Width (divisible by 4{heads}).
    n_layers : int, default 2{n_heads}
    dropout : float, default 0.1
    location_ids : bool, default True
        The literature's baseline (the paper's and LibCity's): per-city location ID
        embeddings in and out, learned on the city's own data, plus the time features.
        False: the feature-only variant that reads TrajMoE's location features and can
        transfer across cities.
    tie_embeddings : bool, default False
        With ``location_ids``: the output ID embeddings (the candidates) are the input ones
        (weight tying, Press and Wolf, EACL 2017), so that a query close to the embedding of a
        cell of the window can rank it first even when the cell has few training visits of
        its own (not in the literature's baselines; docs: results page, literature
        baselines). A ValueError in fit without ``location_ids``.
    distance_prior : bool, default False
        Add TrajMoE's learned distance prior (not in the literature's baselines).
    coord_encoding : {{"linear", "sinusoidal"}}, default "linear"
        Feature-only variant: how coordinates enter (see :class:`TrajMoERegressor`).
    copy_path : bool, default False
        The paper's baseline has none; True adds TrajMoE's copy path (docs/method.rst, "Copy path and rule priors").
    poi_transform : {{"log1p", "raw"}}, default "log1p"
    time_weight : float, default 1.0
        Weight of the next-gap cross-entropy in the loss.
    window_days, min_stays, max_tokens, stride_days : int, default 3, 5, 144, 1
        Windows, as :class:`TrajMoERegressor`.
    lr : float, default 1e-3
    weight_decay : float, default 0.1
    batch_size : int, default 64
    max_epochs : int, default 50
    patience : int, default 3
    monitor : {{"valid_loss", "valid_mrr", "valid_acc1"}}, default "valid_mrr"
        What early stopping watches on the held-out users (higher is better for the ranking
        metrics, which are recorded in ``history_`` either way); ``fit`` ends with the weights of
        the best epoch.
        The ID models' validation loss is dominated by the held-out users' own cells, which no
        training user visited: it rises from the first epoch while their ranking improves.
    validation_fraction : float, default 0.1
    validation_split : {{"users", "time"}}, default "users"
        Held-out users, or each user's last visits in time (the literature's split), as
        :class:`TrajMoERegressor`.
    finetune_epochs : int, default 1
    finetune_lr : float or None, default None
        None = the learning rate ``fit`` ended with.
    finetune_batch_size : int or None, default 8
        Windows per batch of ``partial_fit`` (None = ``batch_size``), as :class:`TrajMoERegressor`.
    finetune_frozen : tuple of str, default ("tower",)
        Parts of the network kept fixed by ``partial_fit`` after ``fit``, as
        :class:`TrajMoERegressor` (``()``: every weight). With ``location_ids=True`` the
        candidates are the per-city ID tables, not the tower, so the default keeps nothing
        that is used fixed.
    clip_grad : float, default 1.0
    city_tz : dict of str -> str, optional
    callbacks : list of skorch callbacks or (name, callback) pairs, optional
        Added after the default callbacks, as :class:`TrajMoERegressor`.
    checkpoint_dir : str or path-like, optional
        Checkpoint every epoch of ``fit`` there and resume from it, as :class:`TrajMoERegressor`.
    device : str or torch.device, default "auto"
    random_state : int, RandomState instance or None, default None
    verbose : int, default 0
    **kwargs
        Parameters routed to the skorch net, as :class:`TrajMoERegressor`.

    Attributes
    ----------
    encoder_ : SpatialSemanticEncoder
    cities_ : list of str
    net_ : skorch.NeuralNet
    time_zones_, time_forms_ : dict of str -> str
        The zone and the form (``"started_at"`` or ``"day/slot"``) each city's times first came
        in, as in :class:`~trajmoe.TrajMoERegressor`.

    Raises
    ------
    ValueError
        From fit, on an invalid parameter.
"""


class _BaselineRegressor(NeuralNextLocationEstimator):
    _parameter_constraints: dict = {
        **NeuralNextLocationEstimator._parameter_constraints,
        "d_model": [Interval(Integral, 1, None, closed="left")],
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "n_heads": [Interval(Integral, 1, None, closed="left")],
        "location_ids": ["boolean"],
        "tie_embeddings": ["boolean"],
    }

    def _module_params(self):
        params = dict(d_model=self.d_model, n_layers=self.n_layers, max_len=self.max_tokens,
                      dropout=self.dropout, copy_path=self.copy_path, poi_transform=self.poi_transform,
                      location_ids=self.location_ids, tie_embeddings=self.tie_embeddings,
                      distance_prior=self.distance_prior,
                      coord_encoding=self.coord_encoding)
        if hasattr(self, "n_heads"):
            params["n_heads"] = self.n_heads
        return {f"module__{k}": v for k, v in params.items()}


class LSTMRegressor(_BaselineRegressor):
    __doc__ = """LSTM next-location model over TrajMoE's location features (a paper baseline).

    Tokens ``poi_emb + geo_emb + pop_emb + t0`` go through a stacked LSTM
    (:class:`trajmoe.nn.LSTMNetwork`); the city's cells are ranked by dot product with the
    query, as in TrajMoE.
""" + _SHARED_DOC.format(heads="", n_heads="") + """
    References
    ----------
    Han et al., arXiv 2505.18670, v2 Table 2; Hochreiter and Schmidhuber, 1997.
    """

    _network = LSTMNetwork

    def __init__(self, encoder=None, d_model=64, n_layers=2, dropout=0.1, location_ids=True,
                 tie_embeddings=False, distance_prior=False, coord_encoding="linear", copy_path=False,
                 poi_transform="log1p", time_weight=1.0, window_days=3, min_stays=5, max_tokens=144,
                 stride_days=1, lr=1e-3, weight_decay=0.1, batch_size=64, max_epochs=50, patience=3,
                 monitor="valid_mrr",
                 validation_fraction=0.1, validation_split="users", finetune_epochs=1, finetune_lr=None,
                 finetune_batch_size=8,
                 finetune_frozen=("tower",),
                 clip_grad=1.0, city_tz=None,
                 callbacks=None, checkpoint_dir=None, device="auto", random_state=None, verbose=0,
                 **kwargs):
        self.encoder = encoder
        self.d_model = d_model
        self.n_layers = n_layers
        self.dropout = dropout
        self.location_ids = location_ids
        self.tie_embeddings = tie_embeddings
        self.distance_prior = distance_prior
        self.coord_encoding = coord_encoding
        self.copy_path = copy_path
        self.poi_transform = poi_transform
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


class TransformerRegressor(_BaselineRegressor):
    __doc__ = """Plain Transformer next-location model over TrajMoE's location features (a paper baseline).

    TrajMoE without the feature streams, experts and router: tokens
    ``poi_emb + geo_emb + pop_emb + t0`` through a causal pre-LN Transformer
    (:class:`trajmoe.nn.TransformerNetwork`); the city's cells are ranked by dot product
    with the query.
""" + _SHARED_DOC.format(heads=" and by n_heads", n_heads="\n    n_heads : int, default 4") + """
    References
    ----------
    Han et al., arXiv 2505.18670, v2 Table 2; Vaswani et al., 2017.
    """

    _network = TransformerNetwork

    def __init__(self, encoder=None, d_model=64, n_layers=2, n_heads=4, dropout=0.1, location_ids=True,
                 tie_embeddings=False, distance_prior=False, coord_encoding="linear", copy_path=False,
                 poi_transform="log1p", time_weight=1.0, window_days=3, min_stays=5, max_tokens=144,
                 stride_days=1, lr=1e-3, weight_decay=0.1, batch_size=64, max_epochs=50, patience=3,
                 monitor="valid_mrr",
                 validation_fraction=0.1, validation_split="users", finetune_epochs=1, finetune_lr=None,
                 finetune_batch_size=8,
                 finetune_frozen=("tower",),
                 clip_grad=1.0, city_tz=None,
                 callbacks=None, checkpoint_dir=None, device="auto", random_state=None, verbose=0,
                 **kwargs):
        self.encoder = encoder
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.location_ids = location_ids
        self.tie_embeddings = tie_embeddings
        self.distance_prior = distance_prior
        self.coord_encoding = coord_encoding
        self.copy_path = copy_path
        self.poi_transform = poi_transform
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
