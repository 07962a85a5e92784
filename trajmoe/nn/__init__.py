"""Neural networks of trajmoe: the SAMoE transformer, the LSTM and Transformer baselines, their
shared embeddings, location tower, retrieval head and loss.

Pure PyTorch. See MODEL.md sections 2-3 (and 6 for the optional copy path) and
:class:`SAMoETransformer` for the architecture.
"""

from .baselines import LSTMNetwork, TransformerNetwork
from .embeddings import LocationInputEmbedding, TimeEmbedding
from .loss import IGNORE_INDEX, TrajMoELoss, location_log_probs, target_log_probs
from .model import PRESETS, SAMoETransformer
from .retrieval import RetrievalNetwork
from .samoe import STREAMS, CausalSelfAttention, ExpertFFN, SAMoEBlock, STARRouter
from .tower import CrossNetwork, LocationTower

__all__ = [
    "IGNORE_INDEX",
    "PRESETS",
    "STREAMS",
    "CausalSelfAttention",
    "CrossNetwork",
    "ExpertFFN",
    "LocationInputEmbedding",
    "LocationTower",
    "LSTMNetwork",
    "RetrievalNetwork",
    "SAMoEBlock",
    "SAMoETransformer",
    "STARRouter",
    "TimeEmbedding",
    "TransformerNetwork",
    "TrajMoELoss",
    "location_log_probs",
    "target_log_probs",
]
