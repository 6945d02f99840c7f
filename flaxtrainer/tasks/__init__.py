"""Task plugins: how a problem turns into features, a loss, predictions and metrics."""

from flaxtrainer.tasks.base import Task
from flaxtrainer.tasks.schemes import (
    BILOU,
    IO,
    IOB1,
    IOB2,
    IOBES,
    IOE1,
    IOE2,
    SCHEMES,
    SchemeDetection,
    TaggingScheme,
    detect_scheme,
    detect_scheme_details,
    get_scheme,
    iob2_to_iobes,
    iobes_labels,
    iobes_to_iob2,
    register_scheme,
)
from flaxtrainer.tasks.token_classification import (
    ChunkingTask,
    PosTaggingTask,
    TokenClassificationTask,
)

__all__ = [
    "BILOU",
    "IO",
    "IOB1",
    "IOB2",
    "IOBES",
    "IOE1",
    "IOE2",
    "SCHEMES",
    "ChunkingTask",
    "PosTaggingTask",
    "SchemeDetection",
    "TaggingScheme",
    "Task",
    "TokenClassificationTask",
    "detect_scheme",
    "detect_scheme_details",
    "get_scheme",
    "iob2_to_iobes",
    "iobes_labels",
    "iobes_to_iob2",
    "register_scheme",
]
