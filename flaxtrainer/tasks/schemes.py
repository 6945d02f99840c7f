"""Chunk tagging schemes: what seqeval needs, what a valid tag sequence is, tag conversions.

A scheme is a small class: its tag prefixes, its seqeval token class (for strict mode) and two
transition tables saying which prefix a tag needs before or after it (same entity type).
A new scheme is a subclass that sets those attributes; register it with :func:`register_scheme`
to refer to it by name.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import ClassVar

from seqeval import scheme as seqeval_scheme

OUTSIDE = "O"


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-geo-loc"`` -> ``("B", "geo-loc")``; ``"O"`` -> ``("O", "")``."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, entity = tag.partition("-")
    return prefix, entity


class TaggingScheme:
    """A chunk tagging scheme (base: the rules shared by all; subclasses fill in the tables)."""

    name: ClassVar[str] = ""
    prefixes: ClassVar[frozenset[str]] = frozenset()
    seqeval: ClassVar[type[seqeval_scheme.Token] | None] = None
    inside: ClassVar[str] = "I"
    # prefix -> prefixes the previous tag must have (same type) / the next tag must have.
    needs_before: ClassVar[dict[str, frozenset[str]]] = {}
    needs_after: ClassVar[dict[str, frozenset[str]]] = {}

    def label_error(self, label: str) -> str | None:
        """Why ``label`` is not a tag of this scheme, or None when it is."""
        if label == OUTSIDE:
            return None
        prefix, entity = split_tag(label)
        if prefix not in self.prefixes or not entity:
            allowed = ", ".join(f"{p}-TYPE" for p in sorted(self.prefixes))
            return f"{label!r} is not a {self.name} tag ({allowed} or O)"
        return None

    def continuation_tag(self, tag: str, labels: Container[str]) -> str:
        """Tag of a word's continuation pieces (``label_all_tokens``): the inside tag.

        ``B-X``, ``E-X``, ``S-X``, ... -> ``I-X`` (when ``I-X`` is a label; else the word's
        tag), so the boundary tag stays on the first piece, whose prediction is the word's.
        """
        prefix, entity = split_tag(tag)
        if prefix == OUTSIDE:
            return tag
        inside = f"{self.inside}-{entity}"
        return inside if inside in labels else tag

    def violations(self, tags: Sequence[str]) -> list[int]:
        """Positions ``i`` where the step from ``tags[i-1]`` to ``tags[i]`` breaks the scheme
        (``i == len(tags)`` for the step to the sentence end)."""
        bad = []
        prev_prefix, prev_type = OUTSIDE, ""
        for i, tag in enumerate([*tags, OUTSIDE]):
            prefix, entity = split_tag(tag)
            before = self.needs_before.get(prefix)
            after = self.needs_after.get(prev_prefix)
            if (before is not None and (prev_prefix not in before or prev_type != entity)) or (
                after is not None and (prefix not in after or prev_type != entity)
            ):
                bad.append(i)
            prev_prefix, prev_type = prefix, entity
        return bad


class IOB1(TaggingScheme):
    """I- inside any chunk; B- only starts a chunk right after one of the same type."""

    name = "IOB1"
    prefixes = frozenset("IB")
    seqeval = seqeval_scheme.IOB1
    needs_before = {"B": frozenset("IB")}


class IOB2(TaggingScheme):
    """B- starts every chunk, I- continues it (a.k.a. BIO)."""

    name = "IOB2"
    prefixes = frozenset("IB")
    seqeval = seqeval_scheme.IOB2
    needs_before = {"I": frozenset("BI")}


class IOE1(TaggingScheme):
    """I- inside any chunk; E- only ends a chunk right before one of the same type."""

    name = "IOE1"
    prefixes = frozenset("IE")
    seqeval = seqeval_scheme.IOE1
    needs_after = {"E": frozenset("IE")}


class IOE2(TaggingScheme):
    """E- ends every chunk, I- precedes it."""

    name = "IOE2"
    prefixes = frozenset("IE")
    seqeval = seqeval_scheme.IOE2
    needs_after = {"I": frozenset("IE")}


class IOBES(TaggingScheme):
    """B- begins, I- continues, E- ends a multi-word chunk; S- is a single-word chunk."""

    name = "IOBES"
    prefixes = frozenset("IBES")
    seqeval = seqeval_scheme.IOBES
    needs_before = {"I": frozenset("BI"), "E": frozenset("BI")}
    needs_after = {"B": frozenset("IE"), "I": frozenset("IE")}


class BILOU(TaggingScheme):
    """IOBES with L- (last) for E- and U- (unit) for S-."""

    name = "BILOU"
    prefixes = frozenset("BILU")
    seqeval = seqeval_scheme.BILOU
    needs_before = {"I": frozenset("BI"), "L": frozenset("BI")}
    needs_after = {"B": frozenset("IL"), "I": frozenset("IL")}


SCHEMES: dict[str, type[TaggingScheme]] = {
    cls.name: cls for cls in (IOB1, IOB2, IOE1, IOE2, IOBES, BILOU)
}
SCHEMES["BIO"] = IOB2


def register_scheme(cls: type[TaggingScheme]) -> type[TaggingScheme]:
    """Class decorator: makes ``cls`` available by its ``name``."""
    SCHEMES[cls.name.upper()] = cls
    return cls


def get_scheme(scheme: str | TaggingScheme | type[TaggingScheme]) -> TaggingScheme:
    """A scheme instance from a name (``"IOB2"``), a class or an instance."""
    if isinstance(scheme, TaggingScheme):
        return scheme
    if isinstance(scheme, type) and issubclass(scheme, TaggingScheme):
        return scheme()
    try:
        return SCHEMES[str(scheme).upper()]()
    except KeyError:
        raise ValueError(f"Unknown tagging scheme {scheme!r}; known: {sorted(SCHEMES)}.") from None


def iob2_to_iobes(tags: Sequence[str]) -> list[str]:
    """IOB2 -> IOBES: a chunk's last word becomes E- (S- if it is also its first).

    An I- that does not continue a chunk of its type starts one, as conlleval reads it.
    """
    out = []
    prev_prefix, prev_type = OUTSIDE, ""
    for i, tag in enumerate(tags):
        prefix, entity = split_tag(tag)
        if prefix not in ("B", "I"):
            out.append(tag)
        else:
            starts = prefix == "B" or prev_prefix == OUTSIDE or prev_type != entity
            nxt = split_tag(tags[i + 1]) if i + 1 < len(tags) else (OUTSIDE, "")
            ends = nxt != ("I", entity)
            out.append(f"{('S' if ends else 'B') if starts else ('E' if ends else 'I')}-{entity}")
        prev_prefix, prev_type = prefix, entity
    return out


def iobes_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOBES -> IOB2: S- -> B-, E- -> I-."""
    mapping = {"S": "B", "E": "I"}
    out = []
    for tag in tags:
        prefix, entity = split_tag(tag)
        out.append(f"{mapping.get(prefix, prefix)}-{entity}" if entity else tag)
    return out


def iobes_labels(iob2_labels: Sequence[str]) -> list[str]:
    """The IOBES label list for the entity types of an IOB2 label list: sorted, O last."""
    types = sorted({split_tag(label)[1] for label in iob2_labels if label != OUTSIDE})
    return [f"{p}-{t}" for p in "BIES" for t in types] + [OUTSIDE]
