"""Flax NNX encoders for token classification that read and write Hugging Face checkpoints.

Families (by `config.json` `model_type`): bert, roberta / xlm-roberta / camembert, distilbert,
electra, deberta-v2 (DeBERTa-v2/v3, mDeBERTa-v3), modernbert. See `docs/internals.md` for the
forward contract.
"""

from flaxtrainer.errors import ModelLoadError
from flaxtrainer.models import (  # noqa: F401  (registration)
    bert,
    deberta_v2,
    distilbert,
    electra,
    modernbert,
    roberta,
)
from flaxtrainer.models.auto import from_pretrained, load_config, read_config, save_pretrained
from flaxtrainer.models.bert import BertConfig, BertForTokenClassification, BertModel
from flaxtrainer.models.config import EncoderConfig
from flaxtrainer.models.deberta_v2 import DebertaV2Config, DebertaV2ForTokenClassification
from flaxtrainer.models.distilbert import (
    DistilBertConfig,
    DistilBertForTokenClassification,
    DistilBertModel,
)
from flaxtrainer.models.electra import ElectraConfig, ElectraForTokenClassification, ElectraModel
from flaxtrainer.models.hub import resolve_model_path
from flaxtrainer.models.layers import segment_position_ids
from flaxtrainer.models.modernbert import ModernBertConfig, ModernBertForTokenClassification
from flaxtrainer.models.registry import (
    ModelFamily,
    family_for,
    register_family,
    supported_model_types,
)
from flaxtrainer.models.roberta import RobertaConfig, RobertaForTokenClassification, RobertaModel
from flaxtrainer.models.token_classification import EncoderForTokenClassification

__all__ = [
    "BertConfig",
    "BertForTokenClassification",
    "BertModel",
    "DebertaV2Config",
    "DebertaV2ForTokenClassification",
    "DistilBertConfig",
    "DistilBertForTokenClassification",
    "DistilBertModel",
    "ElectraConfig",
    "ElectraForTokenClassification",
    "ElectraModel",
    "ModernBertConfig",
    "ModernBertForTokenClassification",
    "EncoderConfig",
    "EncoderForTokenClassification",
    "ModelFamily",
    "ModelLoadError",
    "RobertaConfig",
    "RobertaForTokenClassification",
    "RobertaModel",
    "family_for",
    "from_pretrained",
    "load_config",
    "read_config",
    "register_family",
    "resolve_model_path",
    "save_pretrained",
    "segment_position_ids",
    "supported_model_types",
]
