"""The encoder families, one module each, named after the family: `bert.py`, `roberta.py`, ...

A family module holds the family's encoder, its `<Family>ForTokenClassification` (the shared
`EncoderForTokenClassification` with the family's `backbone`), its checkpoint layout (a
`WeightTable`) and the `register_family` call that makes `from_pretrained` find it; where that
would pass 500 lines, the hyper-parameters (`<family>_config.py`) and the attention
(`<family>_attention.py`) get files of their own beside it. Importing this package registers
every family.
"""

from flaxtrainer.models.families import (  # noqa: F401  (registration)
    bert,
    deberta_v2,
    distilbert,
    electra,
    modernbert,
    roberta,
)
