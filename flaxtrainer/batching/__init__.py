"""From task features to batches: the sampler (which examples form a step), layouts (padded or packed rows), the input pipeline and placement (which rows a process builds)."""
