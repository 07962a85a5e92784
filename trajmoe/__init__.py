"""trajmoe: cross-city human mobility modelling with TrajMoE.

A spatial semantic encoder puts the grid cells of every city into one feature space; a
spatially-aware mixture-of-experts (SAMoE) Transformer predicts the next location in any
city by ranking that city's cells. Both are scikit-learn estimators over pandas visit
frames.

The public names below are imported on first use (PEP 562), so that ``import trajmoe`` and the
``trajmoe`` command start fast; the estimators live in :mod:`trajmoe.estimators`.

References
----------
Han, Yuan, Chen, Ding, Li, "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human
Mobility Modeling", arXiv 2505.18670, 2025.
"""

from ._lazy import attach
from ._version import __version__

__getattr__, __dir__, __all__ = attach(__name__, {
    "GravityBaseline": ".estimators",
    "HistoryFrequencyBaseline": ".estimators",
    "HistoryGravityBaseline": ".estimators",
    "LSTMRegressor": ".estimators",
    "MarkovBaseline": ".estimators",
    "PopularityBaseline": ".estimators",
    "TrajMoERegressor": ".estimators",
    "TransformerRegressor": ".estimators",
    "SpatialSemanticEncoder": ".encoder",
    "load_model": ".persistence",
    "tune_malloc": "._malloc",
    "save_model": ".persistence",
    "DataWarning": ".exceptions",
    "SchemaError": ".exceptions",
    "UnknownCityError": ".exceptions",
    "validate_pois": ".schema",
    "validate_visits": ".schema",
}, submodules=("cli", "datasets", "encoder", "estimators", "exceptions", "metrics", "model_selection", "nn",
               "persistence", "pipeline", "plotting", "preprocessing", "schema", "sequences", "spatial", "taxonomy"))
__all__ = [*__all__, "__version__"]
