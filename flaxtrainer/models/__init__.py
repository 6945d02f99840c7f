"""Flax NNX encoders for token classification that read and write Hugging Face checkpoints.

Families (by `config.json` `model_type`): bert, roberta / xlm-roberta / camembert, distilbert,
electra, deberta-v2 (DeBERTa-v2/v3, mDeBERTa-v3), modernbert. See `docs/internals.md` for the
forward contract. Each family lives in `flaxtrainer.models.families`; importing this package
registers them all.
"""

from flaxtrainer.errors import ModelLoadError
from flaxtrainer.models.auto import from_pretrained, load_config, read_config, save_pretrained
from flaxtrainer.models.config import EncoderConfig
from flaxtrainer.models.families.bert import BertConfig, BertForTokenClassification, BertModel
from flaxtrainer.models.families.deberta_v2 import DebertaV2ForTokenClassification
from flaxtrainer.models.families.deberta_v2_config import DebertaV2Config
from flaxtrainer.models.families.distilbert import (
    DistilBertConfig,
    DistilBertForTokenClassification,
    DistilBertModel,
)
from flaxtrainer.models.families.electra import (
    ElectraConfig,
    ElectraForTokenClassification,
    ElectraModel,
)
from flaxtrainer.models.families.modernbert import ModernBertForTokenClassification
from flaxtrainer.models.families.modernbert_config import ModernBertConfig
from flaxtrainer.models.families.roberta import (
    RobertaConfig,
    RobertaForTokenClassification,
    RobertaModel,
)
from flaxtrainer.models.hub import resolve_model_path
from flaxtrainer.models.layers import segment_position_ids
from flaxtrainer.models.registry import (
    ModelFamily,
    family_for,
    register_family,
    supported_model_types,
)
from flaxtrainer.models.token_classification import EncoderForTokenClassification
from flaxtrainer.models.tokenizer import load_tokenizer

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
    "load_tokenizer",
    "read_config",
    "register_family",
    "resolve_model_path",
    "save_pretrained",
    "segment_position_ids",
    "supported_model_types",
]
