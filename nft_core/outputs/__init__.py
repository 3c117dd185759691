"""What a run shows a person: the outputs observer (metrics.jsonl, grids, curves, summary, trackers,
alarms) and what it draws and writes (visuals, the report)."""
