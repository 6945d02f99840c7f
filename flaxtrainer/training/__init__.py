"""The trainer and its collaborators: evaluation, jitted steps, optimizer, totals, preemption, export."""
