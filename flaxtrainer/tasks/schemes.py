"""Chunk tagging schemes: what seqeval needs, what a valid tag sequence is, tag conversions.

A scheme is a small class: its tag prefixes, its seqeval token class (for strict mode) and two
transition tables saying which prefix a tag needs before or after it (same entity type).
A new scheme is a subclass that sets those attributes; register it with :func:`register_scheme`
to refer to it by name.

:func:`detect_scheme` reads the scheme off training tags (what ``--label_scheme auto`` does)::

    scheme = detect_scheme(train_tags)          # e.g. "IOBES"
    task = TokenClassificationTask(label_names, tokenizer, scheme=scheme)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from seqeval import scheme as seqeval_scheme

if TYPE_CHECKING:
    from flaxtrainer.models.crf import CrfMasks

OUTSIDE = "O"
#: Prefixes of chunk tags in any scheme (``B-PER``, ``L-LOC``, ...).
CHUNK_PREFIXES = frozenset("BIESLU")


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-geo-loc"`` -> ``("B", "geo-loc")``; ``"O"`` -> ``("O", "")``."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, entity = tag.partition("-")
    return prefix, entity


class EntitySpan(NamedTuple):
    """One entity of a sentence: its type and its words ``start:end`` (end exclusive)."""

    type: str
    start: int
    end: int


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

    def default_mode_tags(self, tags: Sequence[str]) -> list[str]:
        """``tags`` as seqeval's default (conlleval-like) mode should read them: it knows the
        B-/I-/E-/S- prefixes, so most schemes pass unchanged (see BILOU and IO)."""
        return list(tags)

    def entity_spans(self, tags: Sequence[str], *, strict: bool = False) -> list[EntitySpan]:
        """The entities of one sentence's tags, in order, read as the seqeval metrics read them:
        by default leniently like conlleval (seqeval's default mode on ``default_mode_tags``,
        so an I- after O opens an entity); with ``strict``, only this scheme's well-formed
        chunks (seqeval's strict mode; the scheme needs a seqeval class)."""
        if strict:
            if self.seqeval is None:
                raise ValueError(
                    f"Strict entity reading needs a scheme that seqeval knows, not {self.name}; "
                    "use strict=False."
                )
            tokens = seqeval_scheme.Tokens(list(tags), scheme=self.seqeval)
            return [EntitySpan(e.tag, e.start, e.end) for e in tokens.entities]
        # imported here: seqeval.metrics imports scikit-learn and SciPy (~1-2 s of CPU), which a
        # run that never reads entities (training only) does not need
        from seqeval.metrics.sequence_labeling import get_entities

        chunks = get_entities(self.default_mode_tags(tags))
        return [EntitySpan(kind, first, last + 1) for kind, first, last in chunks]

    def allows(self, prev: str | None, tag: str | None) -> bool:
        """Whether ``tag`` may follow ``prev``; ``prev=None`` is the sentence start and
        ``tag=None`` its end (both read as ``O``). The one rule behind :meth:`violations` and
        the CRF's transition masks (:func:`allowed_transitions`)."""
        prev_prefix, prev_type = split_tag(OUTSIDE if prev is None else prev)
        prefix, entity = split_tag(OUTSIDE if tag is None else tag)
        before = self.needs_before.get(prefix)
        after = self.needs_after.get(prev_prefix)
        return not (
            (before is not None and (prev_prefix not in before or prev_type != entity))
            or (after is not None and (prefix not in after or prev_type != entity))
        )

    def violations(self, tags: Sequence[str]) -> list[int]:
        """Positions ``i`` where the step from ``tags[i-1]`` to ``tags[i]`` breaks the scheme
        (``i == len(tags)`` for the step to the sentence end)."""
        steps = zip([None, *tags], [*tags, None])
        return [i for i, (prev, tag) in enumerate(steps) if not self.allows(prev, tag)]


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
    _TO_IOBES: ClassVar[dict[str, str]] = {"L": "E", "U": "S"}

    def default_mode_tags(self, tags: Sequence[str]) -> list[str]:
        """L- -> E-, U- -> S-: seqeval's default mode reads BILOU chunks as the IOBES ones."""
        out = []
        for tag in tags:
            prefix, entity = split_tag(tag)
            out.append(f"{self._TO_IOBES[prefix]}-{entity}" if prefix in self._TO_IOBES else tag)
        return out


class IO(TaggingScheme):
    """Entity tags without chunk prefixes (``PER``, ``LOC``, ``O``; ``I-PER`` also reads as
    ``PER``): a run of equal tags is one chunk, so two adjacent chunks of one type merge.

    seqeval has no IO class: only the default mode scores it (tags are read as ``I-TYPE``).
    """

    name = "IO"
    prefixes = frozenset("I")
    seqeval = None

    def label_error(self, label: str) -> str | None:
        prefix, entity = split_tag(label)
        if entity and prefix in CHUNK_PREFIXES - self.prefixes:
            return f"{label!r} has the chunk prefix {prefix}-, which IO tags do not have"
        return None

    def continuation_tag(self, tag: str, labels: Container[str]) -> str:
        return tag

    def allows(self, prev: str | None, tag: str | None) -> bool:
        return True

    def violations(self, tags: Sequence[str]) -> list[int]:
        return []

    def default_mode_tags(self, tags: Sequence[str]) -> list[str]:
        return [tag if tag == OUTSIDE or tag.startswith("I-") else f"I-{tag}" for tag in tags]


SCHEMES: dict[str, type[TaggingScheme]] = {
    cls.name: cls for cls in (IOB1, IOB2, IOE1, IOE2, IOBES, BILOU, IO)
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


# -- detection ------------------------------------------------------------------------------


class SchemeDetection(NamedTuple):
    """What :func:`detect_scheme_details` found: the scheme's name, why (for a log line such as
    ``label scheme: IOBES (detected: S-/E- tags in train)``), and whether the evidence is clear
    (``certain=False``: log it as a warning; the data is ambiguous, mixed or unusual)."""

    scheme: str
    reason: str
    certain: bool


def _chunk_starts(sequences: Iterable[Sequence[str]], boundary: str) -> tuple[int, int]:
    """(chunks opened by I-, chunks opened by ``boundary``) where a chunk opens: after O, at
    the sentence start, or after a tag of another type. A boundary tag right after a chunk of
    its own type is legal in both schemes of the pair and counts for neither."""
    by_inside = by_boundary = 0
    for tags in sequences:
        prev_type = None
        for tag in tags:
            prefix, entity = split_tag(tag)
            if prefix not in ("I", boundary) or not entity:
                prev_type = None
                continue
            if prev_type != entity:
                if prefix == "I":
                    by_inside += 1
                else:
                    by_boundary += 1
            prev_type = entity
    return by_inside, by_boundary


def _inside_or_boundary(
    sequences: list[list[str]], boundary: str, pair: tuple[str, str]
) -> SchemeDetection:
    """IOB1 vs IOB2 (``boundary="B"``) or IOE1 vs IOE2 (``"E"``, read right to left): the
    prefixes are the same, only where chunks open (close) tells them apart."""
    first, second = pair  # IOB1/IOE1: I- opens chunks; IOB2/IOE2: the boundary tag does
    if boundary == "E":  # an IOE sentence read backwards is IOB with E- for B-
        sequences = [list(reversed(tags)) for tags in sequences]
    by_inside, by_boundary = _chunk_starts(sequences, boundary)
    edge = "starts" if boundary == "B" else "ends"
    if not by_inside and not by_boundary:
        return SchemeDetection(
            second, f"{boundary}-/I- tags but no sentences to tell {first} from {second}", False
        )
    if by_inside and not by_boundary:
        return SchemeDetection(
            first, f"I- {edge} chunks ({by_inside}x after O, a sentence edge or another type)", True
        )
    if by_boundary and not by_inside:
        return SchemeDetection(second, f"{boundary}-/I- tags, {boundary}- {edge} every chunk", True)
    chosen = first if by_inside > by_boundary else second
    return SchemeDetection(
        chosen,
        f"mixed {boundary}-/I- tags: I- {edge} {by_inside} chunk(s), {boundary}- {by_boundary}; "
        f"{chosen} is the majority, the others are counted as scheme violations",
        False,
    )


def detect_scheme_details(
    tag_sequences: Iterable[Sequence[str]], labels: Iterable[str] = ()
) -> SchemeDetection:
    """The tagging scheme of tag sequences (e.g. a training split's gold tags), with the reason.

    - ``U-``/``L-`` tags: BILOU.
    - ``S-``, or ``E-`` together with ``B-``: IOBES.
    - ``E-``/``I-`` only (no ``B-``/``S-``, so not IOBES, whose chunks open with B- or S-):
      IOE2, or IOE1 when ``I-`` ends chunks (before O, the sentence end or another type);
      flagged as uncertain, since IOE data is rare.
    - ``B-``/``I-`` only: IOB1 when ``I-`` opens chunks (after O, at the sentence start or after
      a chunk of another type), IOB2 when ``B-`` opens every chunk; by majority, flagged, if
      both occur. The label set alone can't tell them apart: it needs the sequences.
    - no prefixes at all (``PER``, ``LOC``, ``O``): IO, flagged (these may be word classes,
      e.g. POS tags, that have no chunks at all).
    - only ``O`` (or nothing): IOB2, flagged.

    ``labels`` (e.g. the dataset's label names) add to the prefixes seen, not to the sequences.
    """
    sequences = [list(tags) for tags in tag_sequences]
    prefixes: set[str] = set()
    plain: Counter[str] = Counter()
    for tag in [*labels, *(tag for tags in sequences for tag in tags)]:
        if tag == OUTSIDE:
            continue
        prefix, entity = split_tag(tag)
        if entity and prefix in CHUNK_PREFIXES:
            prefixes.add(prefix)
        else:
            plain[tag] += 1
    if not prefixes:
        if not plain:
            return SchemeDetection("IOB2", "no entity tags, only O", False)
        examples = ", ".join(repr(t) for t, _ in plain.most_common(3))
        return SchemeDetection(
            "IO",
            f"no B-/I-/E-/S-/L-/U- prefixes (tags such as {examples}): a run of equal tags is "
            "read as one entity",
            False,
        )
    found = "/".join(f"{p}-" for p in "BIESLU" if p in prefixes)
    if plain:
        examples = ", ".join(repr(t) for t, _ in plain.most_common(3))
        mixed = f"; but also tags without a chunk prefix ({examples})"
    else:
        mixed = ""
    if prefixes & {"L", "U"}:
        clash = prefixes & {"E", "S"}
        note = f", mixed with {'/'.join(sorted(clash))}- tags" if clash else ""
        return SchemeDetection(
            "BILOU", f"{found} tags: L-/U- are BILOU's{note}{mixed}", not (clash or plain)
        )
    if "S" in prefixes or prefixes >= {"B", "E"}:
        return SchemeDetection("IOBES", f"{found} tags (S-/E- are IOBES's){mixed}", not plain)
    if "E" in prefixes:
        found_e = _inside_or_boundary(sequences, "E", ("IOE1", "IOE2"))
        reason = f"I-/E- tags without B-/S- (IOE, rare): {found_e.reason}{mixed}"
        return SchemeDetection(found_e.scheme, reason, False)
    found_b = _inside_or_boundary(sequences, "B", ("IOB1", "IOB2"))
    return SchemeDetection(found_b.scheme, found_b.reason + mixed, found_b.certain and not plain)


def detect_scheme(tag_sequences: Iterable[Sequence[str]], labels: Iterable[str] = ()) -> str:
    """The name of the tagging scheme of tag sequences: ``"IOB1"``, ``"IOB2"``, ``"IOE1"``,
    ``"IOE2"``, ``"IOBES"``, ``"BILOU"`` or ``"IO"``; see :func:`detect_scheme_details` for the
    rules and the reason. For a task::

        TokenClassificationTask(label_names, tokenizer, scheme=detect_scheme(train_tags))
    """
    return detect_scheme_details(tag_sequences, labels).scheme


def allowed_transitions(scheme: TaggingScheme | None, labels: Sequence[str]) -> CrfMasks:
    """The transition masks of ``scheme`` over ``labels`` (all allowed for ``scheme=None``,
    e.g. POS tags). IOB2 forbids ``O -> I-X``, ``B-X -> I-Y`` and ``start -> I-X``; IOBES /
    BILOU also forbid e.g. ``B-X -> O`` and ``B-X -> end``; see ``TaggingScheme.allows``."""
    import numpy as np

    from flaxtrainer.models.crf import CrfMasks  # jax: imported when a CRF is built

    n = len(labels)
    if scheme is None:
        return CrfMasks(np.ones((n, n), bool), np.ones(n, bool), np.ones(n, bool))
    return CrfMasks(
        np.array([[scheme.allows(a, b) for b in labels] for a in labels], bool).reshape(n, n),
        np.array([scheme.allows(None, b) for b in labels], bool),
        np.array([scheme.allows(a, None) for a in labels], bool),
    )
