"""The trainer and its collaborators: run plan, loop, run state, cadence flags, evaluation,
checkpoints, jitted steps, optimizer, totals, preemption, export."""
