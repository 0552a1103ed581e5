"""What a run leaves for people to read: `records` (the epoch's record and line, the figures, the summary),
`folder` (the run folder, written by rank 0, with its lock) and `tensorboard` (event files, --tensorboard)."""
