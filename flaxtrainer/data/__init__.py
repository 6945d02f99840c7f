"""Data readers: Hub datasets, CoNLL columns, CoNLL-U, JSON (Lines) and CSV.

Every reader returns a ``datasets.DatasetDict`` whose splits have the columns ``tokens``
(``Sequence(Value("string"))``) and ``tags`` (``Sequence(ClassLabel(names))``), plus the label
names. A split whose source separates two or more documents (CoNLL ``-DOCSTART-`` lines,
CoNLL-U ``# newdoc`` comments, a ``document_id`` column in JSON/CSV/hub data) has a third,
optional column ``document_id`` (``Value("int32")``: 0, 1, ... in file order), which only a
task's ``context_size`` reads (:mod:`flaxtrainer.tasks.context`); other code must not expect it.
Bad input raises :class:`DataError` naming the file and line or row.
"""

from flaxtrainer.data.conll import read_conll, read_conllu
from flaxtrainer.data.demo import load_wnut16_demo, wnut16_path
from flaxtrainer.data.hub import load_hub_dataset
from flaxtrainer.data.loader import features_for, load_token_classification_data, read_file
from flaxtrainer.data.tabular import read_csv, read_json
from flaxtrainer.errors import DataError

__all__ = [
    "DataError",
    "features_for",
    "load_hub_dataset",
    "load_token_classification_data",
    "load_wnut16_demo",
    "read_conll",
    "read_conllu",
    "read_csv",
    "read_file",
    "read_json",
    "wnut16_path",
]
