"""Entity error report: where a tagger's entity errors are, beyond seqeval's strict scores.

Every gold entity of a sentence falls in exactly one category; a predicted entity that matches
no gold entity is *spurious*:

- ``exact``: a prediction with the same words and the same type;
- ``type``: a prediction with the same words but another type;
- ``boundary``: a prediction that overlaps it with other words (either type; the confusion
  matrix shows which);
- ``missed``: no prediction overlaps it.

Matching is greedy in sentence order, as nervaluate does it: each predicted entity takes the
gold entity with its exact words, else the first gold entity not yet taken that it overlaps; a
gold entity is taken at most once. So ``exact + type + boundary + missed`` is the gold count of
each type, and the matched predictions plus the spurious ones are the predicted count.

The confusion matrix has one row per gold type plus ``spurious`` and one column per predicted
type plus ``missed``: cell (g, p) counts gold entities of type g matched (exactly or by
overlap) to a prediction of type p, so its diagonal holds the right-type matches and each row
sums to the gold count of its type. Alongside, `nervaluate` gives the MUC/SemEval-2013 scores
(``strict``, ``exact``, ``partial``, ``ent_type``: counts, precision, recall, F1), overall and
per type.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from flaxtrainer.tasks.schemes import EntitySpan, TaggingScheme

SPURIOUS = "spurious"
MISSED = "missed"
#: Per-type counts of the report, in table order.
COUNT_FIELDS = ("gold", "exact", "boundary", "type", "missed", "spurious", "predicted")
#: nervaluate's evaluation schemes (SemEval-2013's strict, exact, partial and type).
SEMEVAL_SCHEMES = ("strict", "exact", "partial", "ent_type")


def match_entities(
    gold: Sequence[EntitySpan], predicted: Sequence[EntitySpan]
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """One sentence's matching: ``(pairs, missed, spurious)``: ``pairs`` of (gold index,
    predicted index), the gold indices no prediction took, the predicted indices that took
    none (see the module docstring for the rule)."""
    by_words = {(g.start, g.end): i for i, g in enumerate(gold)}
    taken = [False] * len(gold)
    pairs: list[tuple[int, int]] = []
    spurious: list[int] = []
    for j, p in enumerate(predicted):
        i = by_words.get((p.start, p.end))
        if i is None or taken[i]:
            overlapping = (
                k
                for k, g in enumerate(gold)
                if not taken[k] and p.start < g.end and g.start < p.end
            )
            i = next(overlapping, None)
        if i is None:
            spurious.append(j)
        else:
            taken[i] = True
            pairs.append((i, j))
    return pairs, [i for i, t in enumerate(taken) if not t], spurious


@dataclasses.dataclass(frozen=True)
class EntityErrorReport:
    """Per entity type: the counts of :data:`COUNT_FIELDS`; the confusion matrix (rows
    :attr:`rows`, columns :attr:`columns`); nervaluate's SemEval-2013 results
    (``{"overall": {scheme: {...}}, "per_type": {type: {scheme: {...}}}}``)."""

    entity_types: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    confusion: np.ndarray
    semeval: dict[str, Any]

    @property
    def rows(self) -> list[str]:
        """Row labels of the confusion matrix: the gold types, then ``spurious``."""
        return [*self.entity_types, SPURIOUS]

    @property
    def columns(self) -> list[str]:
        """Column labels of the confusion matrix: the predicted types, then ``missed``."""
        return [*self.entity_types, MISSED]

    def total(self) -> dict[str, int]:
        """The counts summed over the entity types."""
        return {f: sum(c[f] for c in self.counts.values()) for f in COUNT_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """JSON content of ``<split>_error_report.json``."""
        return {
            "entity_types": list(self.entity_types),
            "per_type": self.counts,
            "total": self.total(),
            "confusion": {
                "rows": self.rows,
                "columns": self.columns,
                "counts": self.confusion.tolist(),
            },
            "semeval": self.semeval,
        }

    def _lines(self) -> tuple[list[str], list[list[str]], str]:
        """(header, rows of cells, SemEval line) shared by :meth:`table` and :meth:`markdown`."""
        header = ["type", *COUNT_FIELDS]
        body = [[t, *(str(self.counts[t][f]) for f in COUNT_FIELDS)] for t in self.entity_types]
        total = self.total()
        body.append(["total", *(str(total[f]) for f in COUNT_FIELDS)])
        overall = self.semeval["overall"]
        f1 = "  ".join(f"{s} {overall[s]['f1']:.4f}" for s in SEMEVAL_SCHEMES)
        return header, body, f"SemEval-2013 F1: {f1}"

    def table(self) -> str:
        """Plain-text table, one line per entity type plus a total, and the SemEval F1s."""
        header, body, semeval = self._lines()
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths))
            )
            for row in [header, *body]
        ]
        return "\n".join([*lines, semeval])

    def markdown(self) -> str:
        """The table as markdown (TensorBoard's text tab renders it)."""
        header, body, semeval = self._lines()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join([*lines, "", semeval])


def entity_error_report(
    y_true: Sequence[Sequence[str]],
    y_pred: Sequence[Sequence[str]],
    scheme: TaggingScheme,
    *,
    strict: bool = False,
    entity_types: Iterable[str] = (),
) -> EntityErrorReport:
    """The report of word-level tag sequences, entities read with ``scheme`` (strictly or as
    seqeval's default mode does, see :meth:`TaggingScheme.entity_spans`). ``entity_types``
    (e.g. all types of the task's labels) are listed even when absent, so the table and the
    matrix keep one shape from evaluation to evaluation."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} gold sentences but {len(y_pred)} predicted sentences.")
    gold, predicted = [], []
    with warnings.catch_warnings():
        # Tags that are no chunk tags (a wrong scheme) are the task's to report, once.
        warnings.filterwarnings("ignore", message=".* seems not to be NE tag", category=UserWarning)
        for i, (true_tags, pred_tags) in enumerate(zip(y_true, y_pred)):
            if len(true_tags) != len(pred_tags):
                raise ValueError(
                    f"Sentence {i}: {len(true_tags)} gold tags but {len(pred_tags)} predicted tags."
                )
            gold.append(scheme.entity_spans(true_tags, strict=strict))
            predicted.append(scheme.entity_spans(pred_tags, strict=strict))
    return report_from_spans(gold, predicted, entity_types)


def report_from_spans(
    gold: Sequence[Sequence[EntitySpan]],
    predicted: Sequence[Sequence[EntitySpan]],
    entity_types: Iterable[str] = (),
) -> EntityErrorReport:
    """The report of entities given per sentence (see :func:`entity_error_report`)."""
    seen = {e.type for sentence in [*gold, *predicted] for e in sentence}
    types = tuple(sorted(seen | set(entity_types)))
    index = {t: i for i, t in enumerate(types)}
    counts = {t: dict.fromkeys(COUNT_FIELDS, 0) for t in types}
    confusion = np.zeros((len(types) + 1, len(types) + 1), np.int64)
    for gold_entities, pred_entities in zip(gold, predicted):
        pairs, missed, spurious = match_entities(gold_entities, pred_entities)
        for g in gold_entities:
            counts[g.type]["gold"] += 1
        for p in pred_entities:
            counts[p.type]["predicted"] += 1
        for i, j in pairs:
            g, p = gold_entities[i], pred_entities[j]
            if (g.start, g.end) != (p.start, p.end):
                category = "boundary"
            else:
                category = "exact" if g.type == p.type else "type"
            counts[g.type][category] += 1
            confusion[index[g.type], index[p.type]] += 1
        for i in missed:
            counts[gold_entities[i].type]["missed"] += 1
            confusion[index[gold_entities[i].type], -1] += 1
        for j in spurious:
            counts[pred_entities[j].type]["spurious"] += 1
            confusion[-1, index[pred_entities[j].type]] += 1
    return EntityErrorReport(types, counts, confusion, semeval_scores(gold, predicted, types))


def semeval_scores(
    gold: Sequence[Sequence[EntitySpan]],
    predicted: Sequence[Sequence[EntitySpan]],
    entity_types: Sequence[str],
) -> dict[str, Any]:
    """nervaluate's MUC/SemEval-2013 results: ``{"overall": {scheme: fields}, "per_type":
    {type: {scheme: fields}}}``, fields ``correct, incorrect, partial, missed, spurious,
    possible, actual, precision, recall, f1``. Per type, only the entities of that type are
    compared, so a type confusion counts there as a miss of one type and a spurious entity of
    the other (the confusion matrix shows it as what it is).

    The sentences go through nervaluate's scoring strategies one by one, as its ``Evaluator``
    does, but each sentence is scored only for the types it holds (``Evaluator`` scores every
    type on every sentence: ~3x slower on W-NUT-sized data, for the same counts).
    """
    from nervaluate.entities import Entity, EvaluationResult
    from nervaluate.strategies import (
        EntityTypeEvaluation,
        ExactEvaluation,
        PartialEvaluation,
        StrictEvaluation,
    )

    strategies = {
        "strict": StrictEvaluation(),
        "exact": ExactEvaluation(),
        "partial": PartialEvaluation(),
        "ent_type": EntityTypeEvaluation(),
    }
    tags = list(entity_types)
    overall = {name: EvaluationResult() for name in strategies}
    per_type = {t: {name: EvaluationResult() for name in strategies} for t in tags}
    for gold_spans, pred_spans in zip(gold, predicted):
        if not gold_spans and not pred_spans:
            continue
        # nervaluate's entities end at their last word (inclusive).
        true = [Entity(s.type, s.start, s.end - 1) for s in gold_spans]
        pred = [Entity(s.type, s.start, s.end - 1) for s in pred_spans]
        present = sorted({e.label for e in true} | {e.label for e in pred})
        for name, strategy in strategies.items():
            result = strategy.evaluate(true, pred, tags)[0]
            _add(overall[name], result)
            for t in present:
                if len(present) > 1:  # else the sentence's result is the type's
                    of_type = [e for e in true if e.label == t], [e for e in pred if e.label == t]
                    result = strategy.evaluate(*of_type, [t])[0]
                _add(per_type[t][name], result)

    def fields(results: dict[str, Any]) -> dict[str, Any]:
        for name, result in results.items():  # partial credit (0.5) in partial and ent_type
            result.compute_metrics(partial_or_type=name in ("partial", "ent_type"))
        return {name: dataclasses.asdict(result) for name, result in results.items()}

    return {"overall": fields(overall), "per_type": {t: fields(per_type[t]) for t in tags}}


def _add(total: Any, result: Any) -> None:
    """Add one sentence's nervaluate counts to a running total."""
    total.correct += result.correct
    total.incorrect += result.incorrect
    total.partial += result.partial
    total.missed += result.missed
    total.spurious += result.spurious


# -- the confusion matrix as an image ----------------------------------------------------------

_WHITE = (255, 255, 255)
_RIGHT = (46, 160, 67)  # diagonal: right type
_WRONG = (230, 97, 0)  # another type
_ABSENT = (200, 30, 45)  # missed / spurious
_GRID = (190, 190, 190)
_NOT_APPLICABLE = (235, 235, 235)


def confusion_image(report: EntityErrorReport, *, font_size: int = 14) -> np.ndarray:
    """The confusion matrix as an RGB ``uint8`` array ``[height, width, 3]`` (for TensorBoard):
    gold types (and ``spurious``) down the left, predicted types (and ``missed``) written
    upwards along the top, each non-zero count in its cell. A cell's colour says what it is
    (green: right type, orange: another type, red: missed or spurious) and how much of its row
    it holds (deeper = larger share)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    pad = max(4, font_size // 2)

    def size(text: str) -> tuple[int, int]:
        left, top, right, bottom = font.getbbox(text)
        return right - left, bottom - top

    rows, columns, matrix = report.rows, report.columns, report.confusion
    corner = ("rows: gold", "columns: predicted")
    line_height = size("Ag")[1] + pad // 2
    cell = max([2 * line_height] + [size(str(v))[0] + 2 * pad for v in matrix.flat])
    left = max(size(t)[0] for t in [*rows, *corner]) + 2 * pad
    top = max([size(t)[0] for t in columns] + [2 * line_height]) + 2 * pad
    width, height = left + cell * len(columns) + 1, top + cell * len(rows) + 1
    image = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(image)

    draw.text((pad, top - 2 * line_height - pad // 2), corner[1], fill=(0, 0, 0), font=font)
    draw.text((pad, top - line_height - pad // 2), corner[0], fill=(0, 0, 0), font=font)
    for c, label in enumerate(columns):  # labels written upwards, bottom-aligned
        w, h = size(label)
        strip = Image.new("RGB", (w + 2, h + 4), _WHITE)
        ImageDraw.Draw(strip).text((1, -font.getbbox(label)[1] + 2), label, (0, 0, 0), font=font)
        strip = strip.rotate(90, expand=True)
        x = left + c * cell + (cell - strip.width) // 2
        image.paste(strip, (x, top - pad - strip.height))
    for r, label in enumerate(rows):
        w, h = size(label)
        y = top + r * cell + (cell - h) // 2 - font.getbbox(label)[1]
        draw.text((left - pad - w, y), label, fill=(0, 0, 0), font=font)

    n = len(report.entity_types)
    for r in range(len(rows)):
        row_total = max(int(matrix[r].sum()), 1)
        for c in range(len(columns)):
            x, y = left + c * cell, top + r * cell
            count = int(matrix[r, c])
            if r == n and c == n:
                fill = _NOT_APPLICABLE
            elif count == 0:
                fill = _WHITE
            else:
                base = _RIGHT if r == c else _ABSENT if n in (r, c) else _WRONG
                alpha = 0.15 + 0.85 * count / row_total
                fill = tuple(round(w + (b - w) * alpha) for w, b in zip(_WHITE, base))
            draw.rectangle((x, y, x + cell, y + cell), fill=fill, outline=_GRID)
            if count:
                text = str(count)
                w, h = size(text)
                dark = sum(fill) < 3 * 150
                draw.text(
                    (x + (cell - w) // 2, y + (cell - h) // 2 - font.getbbox(text)[1]),
                    text,
                    fill=_WHITE if dark else (0, 0, 0),
                    font=font,
                )
    edge = (0, 0, 0)  # the missed column and the spurious row stand apart
    draw.line((left + n * cell, top, left + n * cell, height - 1), fill=edge, width=2)
    draw.line((left, top + n * cell, width - 1, top + n * cell), fill=edge, width=2)
    return np.asarray(image, dtype=np.uint8)
