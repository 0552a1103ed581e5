"""Training, in the order it runs: `config` -> `build` (the parts of a run) -> `step` (one SVI step) ->
`epoch` -> `loop` (epochs, evaluation, checkpoints); `state` and `checkpoints` (what a checkpoint holds and
its file), `run_folder`, `report`, `tensorboard`, and `trained_run` (a run folder back in Python)."""
