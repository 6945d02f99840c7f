"""Token classification tasks: NER-style chunk tagging, POS tagging, chunking.

Words are tokenized into subwords; a word's label goes on its first subword (with
``label_all_tokens`` its other pieces take the scheme's inside tag, see
:meth:`TaggingScheme.continuation_tag`); special tokens get -100. Sentences longer than
``max_seq_length`` subwords become overlapping windows (see :mod:`flaxtrainer.tasks.windows`),
each word trained and predicted in exactly one of them; ``decode`` stitches the words back.

A word longer than a whole window keeps only its first ``max_seq_length - specials`` pieces
(its first piece, which carries its label and prediction, always stays); ``prepare`` logs how
many words were clipped. A word the tokenizer turns into no token at all (e.g. a lone
zero-width space) can't be predicted by the model: it decodes as ``fallback_label`` ("O")
with score 0, also logged.

To use another tagging scheme, pass ``scheme=`` (a name or a :class:`TaggingScheme`); to train
on tags converted from the dataset's (e.g. IOB2 -> IOBES), override
:meth:`target_label_names` and :meth:`convert_tags` (see ``examples/bioes_task.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import datasets
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxtrainer.batching.batch_format import IGNORE_INDEX
from flaxtrainer.models.crf import WORD_STARTS, add_word_starts
from flaxtrainer.models.crf import batch_decode as crf_batch_decode
from flaxtrainer.models.crf import batch_nll as crf_batch_nll
from flaxtrainer.tasks.alignment import (
    AlignStats,
    align_sentence,
    check_tokenizer,
    encode_words,
)
from flaxtrainer.tasks.base import Task
from flaxtrainer.tasks.columns import gold_tag_ids, read_columns
from flaxtrainer.tasks.context import DocumentContext
from flaxtrainer.tasks.metrics import seqeval_metrics, tag_accuracy_metrics
from flaxtrainer.tasks.schemes import OUTSIDE, TaggingScheme, allowed_transitions, get_scheme
from flaxtrainer.tasks.stitching import examples_markdown, stitch_words
from flaxtrainer.tasks.vocabulary import warn_unreadable_words

if TYPE_CHECKING:
    from flaxtrainer.tasks.error_report import EntityErrorReport

logger = logging.getLogger(__name__)

MODES = (None, "strict")


class TokenClassificationTask(Task):
    """Chunk tagging (NER) with seqeval metrics.

    Args:
        label_names: the dataset's tag names (``load_token_classification_data``'s list).
        tokenizer: a Hugging Face fast tokenizer (byte-level BPE ones loaded with
            ``add_prefix_space=True``).
        max_seq_length: model row length in subword tokens, special tokens included.
        label_all_tokens: also train on a word's continuation pieces (inside tag).
        scheme: tagging scheme (IOB1, IOB2, IOE1, IOE2, IOBES, BILOU, IO or a TaggingScheme);
            None for tags without chunk structure (POS). To read it off the training tags, as
            ``--label_scheme auto`` does: ``scheme=detect_scheme(train_tags)``
            (:func:`flaxtrainer.tasks.detect_scheme`).
        mode: seqeval mode: None or "default" (conlleval-compatible; BILOU is read as IOBES)
            or "strict" (scheme-exact chunks).
        stride: tokens of overlap between windows of a long sentence; default
            ``max_seq_length // 4`` (32 at 128).
        return_entity_level_metrics: add ``{TYPE}_precision/_recall/_f1/_support``.
        tokenize_batch_size: sentences per fast-tokenizer call.
        crf: a linear-chain CRF over the words instead of a softmax per token (the model
            needs a CRF layer: ``from_pretrained(..., crf=True)``); see :meth:`loss`.
        context_size: subword tokens of document context per sentence (FLERT; 0: none): up to
            ``ceil(N/2)`` tokens of the preceding and ``floor(N/2)`` of the following sentences
            of the same document, label -100 (see :mod:`flaxtrainer.tasks.context`).
    """

    def __init__(
        self,
        label_names: Sequence[str],
        tokenizer: Any,
        *,
        max_seq_length: int = 128,
        label_all_tokens: bool = False,
        scheme: str | TaggingScheme | type[TaggingScheme] | None = "IOB2",
        mode: str | None = None,
        stride: int | None = None,
        return_entity_level_metrics: bool = True,
        tokenize_batch_size: int = 1024,
        context_size: int = 0,
        crf: bool = False,
    ) -> None:
        self.source_label_names = list(label_names)
        self.label_names = list(self.target_label_names(self.source_label_names))
        if len(set(self.label_names)) != len(self.label_names) or not self.label_names:
            raise ValueError(f"Label names must be unique and non-empty: {self.label_names}.")
        self.id2label = dict(enumerate(self.label_names))
        self.num_labels = len(self.label_names)
        self._label2id = {label: i for i, label in self.id2label.items()}

        mode = None if mode == "default" else mode
        if mode not in MODES:
            raise ValueError(f"mode must be None, 'default' or 'strict', got {mode!r}.")
        if isinstance(scheme, str) and scheme.lower() == "auto":
            raise ValueError(
                "scheme='auto' is resolved from the training tags before the task is built: "
                "pass scheme=detect_scheme(train_tags) (flaxtrainer.tasks.detect_scheme)."
            )
        self.scheme = get_scheme(scheme) if scheme is not None else None
        self.mode = mode
        if mode == "strict" and (self.scheme is None or self.scheme.seqeval is None):
            name = "no tagging scheme" if self.scheme is None else f"scheme {self.scheme.name}"
            raise ValueError(
                f"mode='strict' needs a tagging scheme that seqeval knows, not {name}; "
                "use the default seqeval mode (mode=None)."
            )
        self._check_labels()

        check_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        produced = set(tokenizer.model_input_names)
        self.model_input_names = tuple(
            name for name in Task.model_input_names if name == "input_ids" or name in produced
        )
        specials = tokenizer.num_special_tokens_to_add(pair=False)
        budget = max_seq_length - specials
        self.max_seq_length = max_seq_length
        self.stride = max_seq_length // 4 if stride is None else stride
        if budget < 1:
            raise ValueError(
                f"max_seq_length={max_seq_length} must exceed the {specials} special tokens."
            )
        if not 0 <= self.stride < budget:
            raise ValueError(
                f"stride must be in [0, {budget}) for max_seq_length={max_seq_length}, got {self.stride}."
            )
        self.label_all_tokens = label_all_tokens
        self.return_entity_level_metrics = return_entity_level_metrics
        self.tokenize_batch_size = tokenize_batch_size
        self.document_context = DocumentContext(context_size)
        self.context_size = self.document_context.size
        self.fallback_label = OUTSIDE if OUTSIDE in self._label2id else self.label_names[0]
        self._continuation_ids = np.array(
            [self._label2id[self.continuation_tag(label)] for label in self.label_names], np.int32
        )
        self.crf = bool(crf)
        #: The model inputs the tokenizer gives (``model_input_names`` adds ``word_starts``
        #: with a CRF: batched like them, read by the loss and decoding, not by the model).
        self.tokenizer_input_names = self.model_input_names
        if self.crf:
            self.crf_masks = allowed_transitions(self.scheme, self.label_names)
            self.model_input_names = (*self.model_input_names, WORD_STARTS)
            if label_all_tokens:
                logger.warning(
                    "crf=True (--crf) scores each word once, on its first piece: "
                    "label_all_tokens (--label_all_tokens) has no effect on the loss."
                )

    @property
    def label2id(self) -> dict[str, int]:
        return self._label2id

    # --- hooks for subclasses ------------------------------------------------------------
    def target_label_names(self, source_label_names: list[str]) -> list[str]:
        """The model's labels, given the dataset's (identity; override with convert_tags)."""
        return source_label_names

    def convert_tags(self, tags: list[str]) -> list[str]:
        """One sentence's gold tags, dataset -> model labels (identity)."""
        return tags

    def continuation_tag(self, tag: str) -> str:
        """Label of a word's continuation pieces under ``label_all_tokens``."""
        if self.scheme is None:
            return tag
        return self.scheme.continuation_tag(tag, self._label2id)

    def _check_labels(self) -> None:
        if self.scheme is None:
            return
        problems = [p for p in map(self.scheme.label_error, self.label_names) if p]
        if problems:
            raise ValueError(
                f"Labels don't fit tagging scheme {self.scheme.name}: {'; '.join(problems[:5])}. "
                "Pick the scheme of your data (scheme=..., or detect_scheme(train_tags)), or "
                "PosTaggingTask for word classes such as POS tags."
            )

    # --- reading datasets ----------------------------------------------------------------
    def _columns(self, dataset: Any) -> tuple[list[list[str]], list[list[str]] | None]:
        """Words and (converted) gold tag names of every example; tags None if absent."""
        return read_columns(dataset, self.source_label_names, self.convert_tags)

    def _tag_ids(self, tags: list[list[str]]) -> list[np.ndarray]:
        """Label ids of the gold word tags, for the loss (:func:`gold_tag_ids`)."""
        return gold_tag_ids(tags, self._label2id, self.label_names)

    # --- features ------------------------------------------------------------------------
    def name_datasets(self, datasets: Mapping[str, Any]) -> None:
        """Names datasets (by object) for ``prepare``'s log lines: after
        ``name_datasets({"validation": ds})`` those of ``ds`` start with ``validation:``."""
        names = self.__dict__.setdefault("_dataset_names", {})
        names.update({id(ds): (ds, name) for name, ds in datasets.items() if ds is not None})

    def dataset_name(self, dataset: Any) -> str:
        """The name :meth:`name_datasets` gave ``dataset``; "" if none."""
        entry = self.__dict__.get("_dataset_names", {}).get(id(dataset))
        return entry[1] if entry is not None and entry[0] is dataset else ""

    def prepare(self, dataset: Any) -> list[dict]:
        """Tokenizes and aligns every example; one feature per model row, in dataset order.
        Warns when many words are outside the tokenizer's vocabulary (:mod:`.vocabulary`)."""
        tokens, tags = self._columns(dataset)
        tag_ids = self._tag_ids(tags) if tags is not None else None
        if tags is not None:
            self._warn_scheme_violations(tags)
        encodings = encode_words(self.tokenizer, tokens, self.tokenize_batch_size)
        where = self.dataset_name(dataset)
        warn_unreadable_words(tokens, encodings, self.tokenizer, where)
        contexts = self.document_context.contexts(dataset, encodings) if self.context_size else None
        stats = AlignStats()
        features: list[dict] = []
        for i, encoding in enumerate(encodings):
            labels = tag_ids[i] if tag_ids is not None else None
            features.extend(
                align_sentence(
                    encoding,
                    example_index=i,
                    num_words=len(tokens[i]),
                    max_length=self.max_seq_length,
                    stride=self.stride,
                    input_names=self.tokenizer_input_names,
                    word_labels=labels,
                    continuation_labels=(
                        np.where(labels >= 0, self._continuation_ids[np.maximum(labels, 0)], labels)
                        if labels is not None and self.label_all_tokens
                        else None
                    ),
                    stats=stats,
                    context=contexts[i] if contexts is not None else None,
                )
            )
        stats.report(
            logger,
            features,
            len(tokens),
            max_seq_length=self.max_seq_length,
            fallback_label=self.fallback_label,
            context_size=self.context_size if contexts is not None else 0,
            where=where,
        )
        if self.crf:
            add_word_starts(features)
        return features

    def _warn_scheme_violations(self, tags: list[list[str]]) -> None:
        if self.scheme is None:
            return
        count = sentences = 0
        example = ""
        for i, sentence in enumerate(tags):
            bad = self.scheme.violations(sentence)
            if bad:
                count += len(bad)
                sentences += 1
                if not example:
                    j = bad[0]
                    prev = sentence[j - 1] if j > 0 else "<start>"
                    cur = sentence[j] if j < len(sentence) else "<end>"
                    example = f"example {i}, word {j}: {prev!r} -> {cur!r}"
        if count:
            logger.warning(
                "%d gold tag transition(s) in %d sentence(s) break the %s scheme (first: %s). "
                "Strict-mode metrics will not read those chunks as annotated; "
                "check the scheme (scheme=..., --label_scheme) or the data.",
                count,
                sentences,
                self.scheme.name,
                example,
            )
        if count and self.crf:
            logger.warning(
                "crf=True: the CRF loss leaves those %d sentence(s) out (their gold sequence is "
                "impossible under %s).",
                sentences,
                self.scheme.name,
            )

    # --- jitted parts --------------------------------------------------------------------
    def loss(
        self,
        logits: jax.Array,
        labels: jax.Array,
        head: Mapping[str, jax.Array] | None = None,
        batch: Mapping[str, jax.Array] | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Masked softmax cross-entropy in float32: (sum over labels != -100, their count).

        With ``crf=True``: the CRF's exact negative log-likelihood (:func:`flaxtrainer.models.crf.
        crf_nll`) summed over sentences, each packed sentence (``attention_mask`` value) its own
        chain over the first pieces of the words it owns that have a gold tag; the count is the
        number of those words, so the trainer's global normalisation divides by words, as for
        the token loss. ``head`` holds the model's CRF parameters (``model.head_params()``) and
        ``batch`` the batch (``word_starts``, ``attention_mask``); steps pass both when the
        model has head parameters.
        """
        if self._uses_crf(head):
            known = labels != IGNORE_INDEX
            return crf_batch_nll(logits, labels, known, head, batch, self.crf_masks)
        mask = labels != IGNORE_INDEX
        per_token = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), jnp.where(mask, labels, 0)
        )
        return jnp.sum(jnp.where(mask, per_token, 0.0)), jnp.sum(mask, dtype=jnp.float32)

    def predict_step(
        self,
        logits: jax.Array,
        head: Mapping[str, jax.Array] | None = None,
        batch: Mapping[str, jax.Array] | None = None,
    ) -> dict[str, jax.Array]:
        """Per token: argmax label (int32) and its softmax probability (float32).

        With ``crf=True``, at the words' first pieces: the Viterbi tags of each sentence's
        chain (transitions the scheme forbids excluded) and their CRF marginal probability.
        """
        logits = logits.astype(jnp.float32)
        out = {
            "predictions": jnp.argmax(logits, axis=-1).astype(jnp.int32),
            "scores": jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1),
        }
        if self._uses_crf(head):
            tags, probs = crf_batch_decode(logits, head, batch, self.crf_masks)
            out = {
                "predictions": jnp.where(tags >= 0, tags, out["predictions"]),
                "scores": jnp.where(tags >= 0, probs, out["scores"]),
            }
        return out

    def _uses_crf(self, head: Mapping[str, jax.Array] | None) -> bool:
        """Whether the CRF path runs; refuses a task/model mismatch (at trace time)."""
        if self.crf and not head:
            raise ValueError(
                "The task has crf=True but the model has no CRF layer: build it with "
                "from_pretrained(..., crf=True) (the --crf flag does this)."
            )
        if head and not self.crf:
            raise ValueError(
                'The model has a CRF layer (config.json: "crf": true) but the task was built '
                "without it: pass crf=True to the task (--crf on the command line)."
            )
        return self.crf

    # --- back to words -------------------------------------------------------------------
    def word_predictions(
        self, dataset: Any, features: Sequence[dict], outputs: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per example: label id and score of each word, from the token that owns it
        (:func:`flaxtrainer.tasks.stitching.stitch_words`)."""
        if dataset is None:
            n_examples = max((f["example_index"] + 1 for f in features), default=0)
        else:
            n_examples = len(dataset["tokens"] if isinstance(dataset, Mapping) else dataset)
        return stitch_words(features, outputs, n_examples, self._label2id[self.fallback_label])

    def decode(
        self, dataset: Any, features: Sequence[dict], outputs: Sequence[Mapping[str, np.ndarray]]
    ) -> list[list[str]]:
        """Word-level tags of every example, in dataset order."""
        preds, _ = self.word_predictions(dataset, features, outputs)
        return [[self.label_names[p] for p in sentence] for sentence in preds]

    def decode_with_scores(
        self, dataset: Any, features: Sequence[dict], outputs: Sequence[Mapping[str, np.ndarray]]
    ) -> list[list[tuple[str, float]]]:
        """Per example, per word: (tag, softmax probability of that tag)."""
        preds, scores = self.word_predictions(dataset, features, outputs)
        return [
            [(self.label_names[p], float(s)) for p, s in zip(sentence, sentence_scores)]
            for sentence, sentence_scores in zip(preds, scores)
        ]

    def format_examples(
        self,
        dataset: Any,
        features: Sequence[dict],
        outputs: Sequence[Mapping[str, np.ndarray]],
        n: int = 3,
    ) -> str:
        """Markdown of the first ``n`` examples, ``word/PREDICTED``; errors in bold with the
        gold tag (the trainer's TensorBoard callback shows it at each evaluation)."""
        keep = [i for i, f in enumerate(features) if f["example_index"] < n]
        predicted = self.decode(None, [features[i] for i in keep], [outputs[i] for i in keep])
        head = (
            dataset.select(range(min(n, len(dataset))))
            if isinstance(dataset, datasets.Dataset)
            else dataset
        )
        words, gold = self._columns(head)
        return examples_markdown(words, gold, predicted)

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's padding id (0 if it has none), for padding ``input_ids``."""
        return self.tokenizer.pad_token_id or 0

    # --- metrics -------------------------------------------------------------------------
    def compute_metrics(
        self, dataset: Any, features: Sequence[dict], outputs: Sequence[Mapping[str, np.ndarray]]
    ) -> dict[str, float]:
        """Word-level metrics of the owned first-piece predictions against the gold tags."""
        _, gold = self._columns(dataset)
        if gold is None:
            raise ValueError("compute_metrics needs a dataset with a 'tags' column.")
        predicted = self.decode(dataset, features, outputs)
        self._decoded = (features, outputs, gold, predicted)  # for error_report, read once
        return self.metrics_from_tags(gold, predicted)

    #: (features, outputs, gold, predicted) of the last compute_metrics, until error_report.
    _decoded: tuple[Any, Any, list[list[str]], list[list[str]]] | None = None

    def error_report(
        self, dataset: Any, features: Sequence[dict], outputs: Sequence[Mapping[str, np.ndarray]]
    ) -> EntityErrorReport | None:
        """Where the entity errors are, per entity type (:mod:`flaxtrainer.tasks.error_report`):
        found exactly, with wrong boundaries, with the wrong type, missed, spurious; entities
        read with the task's scheme and seqeval mode. None for a task without entities (no
        tagging scheme: POS tags) or a dataset without gold tags. Right after
        ``compute_metrics`` on the same outputs it reuses the tags that one decoded."""
        from flaxtrainer.tasks.error_report import entity_error_report

        decoded, self._decoded = self._decoded, None
        if self.scheme is None:
            return None
        if decoded is not None and decoded[0] is features and decoded[1] is outputs:
            gold, predicted = decoded[2], decoded[3]
        else:
            _, gold = self._columns(dataset)
            if gold is None:
                return None
            predicted = self.decode(dataset, features, outputs)
        types = {e.type for label in self.label_names for e in self.scheme.entity_spans([label])}
        return entity_error_report(
            gold, predicted, self.scheme, strict=self.mode == "strict", entity_types=types
        )

    def metrics_from_tags(
        self, y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]
    ) -> dict[str, float]:
        """seqeval over word tag sequences, with this task's scheme and mode."""
        return seqeval_metrics(
            y_true,
            y_pred,
            scheme=self.scheme,
            mode=self.mode,
            entity_level=self.return_entity_level_metrics,
        )


class ChunkingTask(TokenClassificationTask):
    """Syntactic chunking (CoNLL-2000 style NP/VP/PP chunks): seqeval on chunk tags.

    The original CoNLL-2003 files tag chunks in IOB1: pass ``scheme="IOB1"`` for them.
    """


class PosTaggingTask(TokenClassificationTask):
    """Part-of-speech tagging: word accuracy overall and per tag, no chunks, no seqeval.

    Continuation pieces (``label_all_tokens``) take the word's own tag.
    """

    def __init__(self, label_names: Sequence[str], tokenizer: Any, **kwargs: Any) -> None:
        kwargs.setdefault("scheme", None)
        super().__init__(label_names, tokenizer, **kwargs)

    def metrics_from_tags(
        self, y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]
    ) -> dict[str, float]:
        """``accuracy`` and ``{TAG}_accuracy`` / ``{TAG}_support`` (with entity-level metrics)."""
        return tag_accuracy_metrics(y_true, y_pred, per_tag=self.return_entity_level_metrics)
