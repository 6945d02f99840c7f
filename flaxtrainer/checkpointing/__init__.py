"""Checkpoints with orbax: one manager for the latest and the best step, restore, the best-metric rule."""
