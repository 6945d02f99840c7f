"""Model families by `config.json` `model_type`."""

from __future__ import annotations

import dataclasses

from flaxtrainer.errors import ModelLoadError
from flaxtrainer.models.config import EncoderConfig
from flaxtrainer.models.hf_weights import WeightTable
from flaxtrainer.models.token_classification import EncoderForTokenClassification


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """Everything needed to build, load and save one encoder family.

    `config_cls.architectures` lists the `model_type`s the family serves (e.g. RoBERTa also
    serves `xlm-roberta` and `camembert`, which share its code and checkpoint layout).
    """

    name: str
    config_cls: type[EncoderConfig]
    model_cls: type[EncoderForTokenClassification]
    weights: WeightTable

    @property
    def model_types(self) -> tuple[str, ...]:
        return tuple(self.config_cls.architectures)


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Makes `family` available to `from_pretrained` for each of its model types."""
    for model_type in family.model_types:
        _FAMILIES[model_type] = family
    return family


def supported_model_types() -> tuple[str, ...]:
    return tuple(sorted(_FAMILIES))


def family_for(model_type: str | None, source: str = "config.json") -> ModelFamily:
    """The family serving `model_type`; `source` names the config file in the error."""
    if model_type in _FAMILIES:
        return _FAMILIES[model_type]
    found = "no model_type" if model_type is None else f"model_type {model_type!r}"
    raise ModelLoadError(
        f"{source}: {found} is not supported; supported model types: "
        + ", ".join(supported_model_types())
    )


def family_of(model: EncoderForTokenClassification) -> ModelFamily:
    """The family a model instance belongs to."""
    return family_for(model.config.model_type, type(model).__name__)
