"""The arguments of a run: TrainingArguments and the run_flax_ner.py job arguments (model, data)."""
