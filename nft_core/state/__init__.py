"""Run state: everything a run saves and restores (`RunState` and its holders), checkpoint folders, the
sharded state of FSDP2 runs, which checkpoint a resume goes on from, and run directories."""
