"""Inference on raw text with a fine-tuned model: entities (NER, chunks) or word tags (POS).

    from flaxtrainer.inference.pipeline import TokenClassificationPipeline

    tagger = TokenClassificationPipeline("output_ner")
    tagger("Angela Merkel visited Paris.")
    # {"text": "...", "entities": [{"type": "PER", "text": "Angela Merkel", "start": 0,
    #   "end": 13, "score": 0.98}, {"type": "LOC", "text": "Paris", ...}]}

The model folder is an output_dir of a flaxtrainer run: Hugging Face weights, config and
tokenizer, plus `flaxtrainer_task.json` (task class, its arguments and the dataset's label
names), so inference rebuilds exactly the task that was trained. Raw text is split into words at
whitespace and punctuation with character offsets, keeping combining marks with their letters
(see `split_words`); pre-split words are accepted as well. The
sentences go through the training input path (the task's `prepare`, the trainer's layout and
compiled evaluation step, the task's `decode_with_scores`), so long inputs are windowed and
stitched, and short ones packed, exactly as in evaluation. That path also warns, once per
call, when many words are outside the tokenizer's vocabulary (text in a script the model does
not know: `flaxtrainer.tasks.vocabulary`), and a base model without a trained head is named.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import regex

from flaxtrainer.errors import UserError
from flaxtrainer.outputs.results import TASK_FILE, read_task_file
from flaxtrainer.tasks.schemes import TaggingScheme, get_scheme

if TYPE_CHECKING:
    from flaxtrainer.training.trainer import FlaxTrainer

logger = logging.getLogger(__name__)

#: Whitespace-free chunks of the text (whitespace as `str.isspace`/`str.split` see it).
_CHUNK_PATTERN = re.compile(r"\S+")
#: The words of one chunk. `\X` is a grapheme cluster: a base character with the combining
#: marks, ZWJ/ZWNJ, variation selectors and emoji modifiers that belong to it. A word is a run
#: of clusters of letters/digits/underscore (after a cluster may come one that starts with a
#: mark: Unicode does not glue a few spacing vowel signs, e.g. Myanmar ones, to their base);
#: any other cluster (punctuation, symbol, emoji) is a word alone. A mark with no base (at a
#: chunk's start) belongs to no word, nor does an invisible format character standing alone
#: (zero-width space, BOM, LRM/RLM: separators, which tokenizers drop); the soft hyphen and
#: the word joiner stay inside a word. `\p{GCB=Prepend}` lets a prepended sign (e.g. the
#: Arabic number sign U+0600) start the word it prefixes.
WORD_PATTERN = regex.compile(
    r"(?=\p{GCB=Prepend}*[\p{L}\p{N}_])\X"
    r"(?:(?=\p{GCB=Prepend}*[\p{L}\p{M}\p{N}_\u00ad\u2060])\X)*"
    r"|(?=[^\p{M}\p{Cf}])\X"
)


@dataclass(frozen=True)
class Word:
    """A word of the input with its character span `[start, end)` in the text."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Entity:
    """A tagged span: `text == source[start:end]`, `score` = mean of its words' scores."""

    type: str
    text: str
    start: int
    end: int
    score: float | None


@dataclass(frozen=True)
class TaggedWord:
    """A word with its predicted tag (POS tagging) and that tag's probability."""

    word: str
    tag: str
    start: int
    end: int
    score: float | None


def _round(score: float | None) -> float | None:
    return None if score is None else round(float(score), 6)


def split_words(text: str) -> list[Word]:
    r"""Words of `text` with offsets into it (`text[w.start:w.end] == w.text`).

    A word is a run of letters, digits and underscores together with their combining marks
    (Devanagari vowel signs and virama, Arabic harakat, Hebrew points, a decomposed accent
    such as `e` + U+0301), so no word starts or ends inside a grapheme cluster; each
    punctuation mark or symbol (with any marks on it) is a word alone. For ASCII this is
    `re.findall(r"\w+|[^\w\s]", text)`: `"Merkel's"` gives `Merkel`, `'`, `s`. Invisible
    format characters (zero-width space, BOM, direction marks) separate words like spaces.

    Scripts written without spaces between words (Thai, Lao, Khmer, Myanmar, Chinese,
    Japanese) give one word per run of letters and marks: often a phrase or a clause rather
    than a dictionary word. That is the honest unit without a dictionary: it never cuts a
    syllable, the tokenizer still splits it into pieces, but an entity can only cover whole
    runs. Text segmented with zero-width spaces gives those words; for finer words otherwise,
    segment the text first (e.g. with PyThaiNLP) and pass word lists.
    """
    return [
        Word(m.group(), m.start(), m.end())
        for chunk in _CHUNK_PATTERN.finditer(text)
        for m in WORD_PATTERN.finditer(text, chunk.start(), chunk.end())
    ]


def words_from_tokens(tokens: Sequence[str]) -> tuple[str, list[Word]]:
    """Pre-split words -> (their text joined by single spaces, words with offsets into it)."""
    words, position = [], 0
    for token in tokens:
        words.append(Word(token, position, position + len(token)))
        position += len(token) + 1
    return " ".join(tokens), words


def group_entities(
    text: str,
    words: Sequence[Word],
    tags: Sequence[str],
    scores: Sequence[float | None],
    scheme: TaggingScheme | None = None,
) -> list[Entity]:
    """Chunks of a tag sequence, read leniently like conlleval (seqeval's default mode).

    `scheme` says how to read the tags (its `default_mode_tags`: e.g. BILOU's L-/U- as E-/S-,
    IO's bare `PER` as `I-PER`); without one, prefixed tags of any scheme are read as BILOU's
    reading covers IOB1/IOB2/IOE/IOBES too.
    """
    from seqeval.metrics.sequence_labeling import get_entities

    normalised = (scheme or get_scheme("BILOU")).default_mode_tags(tags)
    entities = []
    for entity_type, first, last in get_entities(normalised):
        start, end = words[first].start, words[last].end
        span = scores[first : last + 1]
        score = None if any(s is None for s in span) else float(np.mean(span))
        entities.append(Entity(entity_type, text[start:end], start, end, _round(score)))
    return entities


def _resolve_folder(model_dir: str | Path) -> Path:
    from flaxtrainer.models.hub import local_model_folder

    return Path(local_model_folder(str(model_dir)))


class TokenClassificationPipeline:
    """Tags sentences with a fine-tuned model folder; see the module docstring."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 32,
        task_name: str | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        from flaxtrainer.models import from_pretrained
        from flaxtrainer.models.tokenizer import load_tokenizer, resolve_max_seq_length

        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}", "use e.g. 32")
        folder = _resolve_folder(model_dir)
        self.model_dir = folder
        self.batch_size = batch_size
        info = read_task_file(folder) or {}
        if not info and task_name is None:
            logger.info("%s has no %s; assuming an NER model.", folder, TASK_FILE)
        self.model = from_pretrained(folder)
        model_labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        if not info and all(label == f"LABEL_{i}" for i, label in enumerate(model_labels)):
            logger.warning(
                "%s has no %s and only generic labels (%s): a base model, whose classifier head "
                "was never trained, so the tags it gives mean nothing. Fine-tune it first "
                "(`flaxtrainer demo` writes ./output_demo) and tag with that output_dir.",
                folder,
                TASK_FILE,
                ", ".join(model_labels[:3]),
            )
        self.tokenizer = load_tokenizer(str(folder))
        task_kwargs = dict(info.get("task_kwargs") or {})
        if self.model.config.crf:  # a CRF model decodes with Viterbi, task file or not
            task_kwargs["crf"] = True
        task_kwargs["max_seq_length"] = resolve_max_seq_length(
            max_seq_length or task_kwargs.get("max_seq_length"), str(folder), self.tokenizer
        )
        self.task = _inference_task(info, task_name, model_labels, self.tokenizer, task_kwargs)
        task_labels = [self.task.id2label[i] for i in range(self.task.num_labels)]
        if task_labels != model_labels:
            raise UserError(
                f"{folder}: the task's labels {task_labels} differ from the model's {model_labels}",
                f"re-export the model with flaxtrainer, or fix label_names in {TASK_FILE}",
            )
        self.tags_words = getattr(self.task, "scheme", True) is None
        self._trainer = _inference_trainer(
            self.model, self.task, self.tokenizer, folder, batch_size
        )

    # -- words -> tags -----------------------------------------------------------------------

    def tag(self, sentences: Sequence[Sequence[str]]) -> list[list[tuple[str, float | None]]]:
        """Per sentence, per word: (tag, probability of that tag; None if the task gives none).

        The sentences go through the training input path: ``task.prepare``, the trainer's
        layout (packed rows with flaxtrainer's encoders) and its compiled evaluation step, as
        ``--do_predict`` does (``FlaxTrainer.evaluation_loop``)."""
        if not sentences:
            return []
        data = {"tokens": [list(words) for words in sentences]}
        try:
            result = self._trainer.evaluation_loop(data, "predict", expect_gold=False)
        finally:
            self._trainer.inputs.forget(data)  # each call's sentences are new
        decode = getattr(self.task, "decode_with_scores", None)
        if decode is not None:
            return decode(data, result.features, result.outputs)
        tags = self.task.decode(data, result.features, result.outputs)
        return [[(tag, None) for tag in sentence] for sentence in tags]

    # -- text in, dicts out -------------------------------------------------------------------

    def predict(self, inputs: Iterable[str | Sequence[str]]) -> list[dict[str, Any]]:
        """One result dict per input: raw text (str) or pre-split words (list of str)."""
        texts, word_lists = [], []
        for item in inputs:
            if isinstance(item, str):
                text, words = item, split_words(item)
            else:
                text, words = words_from_tokens([str(w) for w in item])
            texts.append(text)
            word_lists.append(words)
        tagged = self.tag([[w.text for w in words] for words in word_lists])
        results = []
        for text, words, pairs in zip(texts, word_lists, tagged):
            tags = [tag for tag, _ in pairs]
            scores = [score for _, score in pairs]
            if self.tags_words:
                items = [
                    asdict(TaggedWord(w.text, tag, w.start, w.end, _round(score)))
                    for w, tag, score in zip(words, tags, scores)
                ]
                results.append({"text": text, "words": items})
            else:
                entities = group_entities(
                    text, words, tags, scores, getattr(self.task, "scheme", None)
                )
                results.append({"text": text, "entities": [asdict(e) for e in entities]})
        return results

    def __call__(
        self, inputs: str | Sequence[str | Sequence[str]]
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """A text gives one dict; a list of texts (or of word lists) gives a list of dicts."""
        if isinstance(inputs, str):
            return self.predict([inputs])[0]
        return self.predict(inputs)


def _inference_task(
    info: dict[str, Any],
    task_name: str | None,
    model_labels: list[str],
    tokenizer: Any,
    task_kwargs: dict[str, Any],
) -> Any:
    """The task a model was trained with, rebuilt from its flaxtrainer_task.json.

    An explicit `task_name` picks the built-in class instead. A saved user class that does not
    import here (its module is not on the path) is replaced, with a warning, by the built-in
    class it derives from, over the model's own labels and tagging scheme: prediction needs
    only `prepare` and `decode`, which that class provides.
    """
    from flaxtrainer.tasks.factory import build_task, task_class_for
    from flaxtrainer.tasks.schemes import detect_scheme_details

    # The tagging scheme (and seqeval mode) the model was trained with: task_kwargs holds it
    # since --label_scheme; older files only the top-level "scheme"; a model without a task
    # file gets the scheme its label names show (e.g. S-/E- labels: IOBES).
    task_kwargs = dict(task_kwargs)
    if (task_name or info.get("task_name")) == "pos":
        task_kwargs.pop("scheme", None)
        task_kwargs.pop("mode", None)
    elif "scheme" in info:
        task_kwargs.setdefault("scheme", info["scheme"])
    elif "scheme" not in task_kwargs:
        found = detect_scheme_details([], labels=model_labels)
        logger.info("label scheme: %s (from the model's labels: %s)", found.scheme, found.reason)
        task_kwargs["scheme"] = found.scheme
    if task_name or not info.get("task_class"):
        cls = task_class_for(task_name or info.get("task_name") or "ner")
        return build_task(cls, model_labels, tokenizer, task_kwargs)
    try:
        cls = task_class_for(info["task_name"], info["task_class"], flag=f"saved {TASK_FILE}")
    except UserError as exc:
        fallback = info.get("base_task_class") or "flaxtrainer.tasks:TokenClassificationTask"
        logger.warning("%s; predicting with %s instead.", exc.message, fallback)
        cls = task_class_for(info["task_name"], fallback, flag=f"saved {TASK_FILE}")
        return build_task(
            cls, model_labels, tokenizer, {**task_kwargs, "scheme": info.get("scheme")}
        )
    return build_task(cls, info.get("label_names") or model_labels, tokenizer, task_kwargs)


def _inference_trainer(
    model: Any, task: Any, tokenizer: Any, folder: Path, batch_size: int
) -> FlaxTrainer:
    """A trainer that only evaluates: one device, ``batch_size`` rows per batch, no trackers,
    nothing written (``output_dir`` is the model folder, which evaluation never writes to)."""
    import jax

    from flaxtrainer.config.training_args import TrainingArguments
    from flaxtrainer.training.trainer import FlaxTrainer

    args = TrainingArguments(
        output_dir=str(folder),
        per_device_eval_batch_size=batch_size,
        report_to="none",
        disable_tqdm=True,
    )
    return FlaxTrainer(model, task, args, tokenizer=tokenizer, devices=jax.local_devices()[:1])


# -- `flaxtrainer predict` -------------------------------------------------------------------
