"""flaxtrainer: fine-tune Transformer encoders for token classification with JAX/Flax NNX."""

__version__ = "0.1.0"
