"""trajmoe: cross-city human mobility modelling with TrajMoE.

A spatial semantic encoder puts the grid cells of every city into one feature space; a
spatially-aware mixture-of-experts (SAMoE) Transformer predicts the next location in any
city by ranking that city's cells. Both are scikit-learn estimators over pandas visit
frames.

References
----------
Han, Yuan, Chen, Ding, Li, "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human
Mobility Modeling", arXiv 2505.18670, 2025.
"""

__version__ = "0.1.0"

from .baselines import (GravityBaseline, HistoryFrequencyBaseline, HistoryGravityBaseline, MarkovBaseline,
                        PopularityBaseline)
from .encoder import SpatialSemanticEncoder
from .estimator import TrajMoERegressor
from .neural_baselines import LSTMRegressor, TransformerRegressor
from .persistence import load_model, save_model
from .schema import DataWarning, SchemaError, validate_pois, validate_visits

__all__ = [
    "DataWarning",
    "GravityBaseline",
    "HistoryFrequencyBaseline",
    "HistoryGravityBaseline",
    "LSTMRegressor",
    "MarkovBaseline",
    "PopularityBaseline",
    "SchemaError",
    "SpatialSemanticEncoder",
    "TrajMoERegressor",
    "TransformerRegressor",
    "load_model",
    "save_model",
    "validate_pois",
    "validate_visits",
    "__version__",
]
