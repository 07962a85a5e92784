"""The estimators: next-location models over canonical visit frames, all with one API.

:class:`NextLocationEstimator` (``_base``) turns visits into evaluation windows and any model's
scores into ``predict``, ``predict_topk``, ``target_table``, ``target_ranks`` and ``score``. The
counting baselines (``_counting``: popularity, Markov, history frequency, gravity) need no torch;
:class:`NeuralNextLocationEstimator` (``_neural``) is the skorch training shared by every
network: TrajMoE (``_trajmoe``) and the LSTM and Transformer baselines (``_recurrent``).
:class:`NextTokenClassifier` (``_tokens``) is the array-level core: the same networks over
integer token matrices, a plain scikit-learn classifier. Names are imported on first use, so the
counting baselines load without torch.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "NextLocationEstimator": "._base",
    "PopularityBaseline": "._counting",
    "MarkovBaseline": "._counting",
    "HistoryFrequencyBaseline": "._counting",
    "GravityBaseline": "._counting",
    "HistoryGravityBaseline": "._counting",
    "NeuralNextLocationEstimator": "._neural",
    "adamw_matrices_decay": "._neural",
    "NET_PREFIXES": "._neural",
    "DEFAULT_CALLBACKS": "._neural",
    "TrajMoERegressor": "._trajmoe",
    "LSTMRegressor": "._recurrent",
    "TransformerRegressor": "._recurrent",
    "NextTokenClassifier": "._tokens",
})
