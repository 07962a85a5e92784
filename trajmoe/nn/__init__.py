"""Neural network of TrajMoE: the SAMoE transformer, its embeddings, location tower and loss.

Pure PyTorch. See MODEL.md sections 2-3 (and 6 for the optional copy path) and
:class:`SAMoETransformer` for the architecture.
"""

from .embeddings import LocationInputEmbedding, TimeEmbedding
from .loss import IGNORE_INDEX, TrajMoELoss, location_log_probs, target_log_probs
from .model import PRESETS, SAMoETransformer
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
    "SAMoEBlock",
    "SAMoETransformer",
    "STARRouter",
    "TimeEmbedding",
    "TrajMoELoss",
    "location_log_probs",
    "target_log_probs",
]
