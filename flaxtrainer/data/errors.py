"""The one error type of the data readers (defined in :mod:`flaxtrainer.errors`)."""

from flaxtrainer.errors import DataError

__all__ = ["DataError"]
