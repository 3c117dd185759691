"""The loop: the trainer (the epoch and the lifecycle), the collectors, the update, evaluation, the
checks before a run, divergence guarding, prompts, precision and signals."""
