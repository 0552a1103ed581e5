"""A run's checkpoint, in the order a resume meets it: `store` (checkpoint.pt: header, checksum, safe
unpickling) -> `validation` (everything in it against what its own config builds) -> `payload` (the
Checkpoint it holds: config, weights, optimizer states, `generators`' states, progress) -> `resume` (which
settings may change when it is resumed)."""
