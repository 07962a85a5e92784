"""Neural networks of trajmoe: the SAMoE transformer, the LSTM and Transformer baselines, their
shared embeddings, location tower, retrieval head and loss, and the dataset and single-city batch
loaders that feed them.

Pure PyTorch. See docs/method.rst, "Location features" and "The SAMoE network" (and "Copy path and rule
priors" for the options) and :class:`SAMoETransformer` for the architecture.
"""

from .._constants import IGNORE_INDEX
from .data import CityBatchLoader, CityBatchSampler, WindowDataset
from .embeddings import LocationInputEmbedding, TimeEmbedding
from .loss import TrajMoELoss, location_log_probs, ranking_scores, target_log_probs
from .model import PRESETS, SAMoETransformer
from .recurrent import LSTMNetwork, TransformerNetwork
from .retrieval import RetrievalNetwork
from .returns import ReturnScorer
from .samoe import STREAMS, CausalSelfAttention, ExpertFFN, SAMoEBlock, STARRouter
from .tower import CrossNetwork, LocationTower

__all__ = [
    "IGNORE_INDEX",
    "PRESETS",
    "STREAMS",
    "CausalSelfAttention",
    "CityBatchLoader",
    "CityBatchSampler",
    "CrossNetwork",
    "ExpertFFN",
    "LocationInputEmbedding",
    "LocationTower",
    "LSTMNetwork",
    "RetrievalNetwork",
    "ReturnScorer",
    "SAMoEBlock",
    "SAMoETransformer",
    "STARRouter",
    "TimeEmbedding",
    "TransformerNetwork",
    "TrajMoELoss",
    "WindowDataset",
    "location_log_probs",
    "ranking_scores",
    "target_log_probs",
]
