"""The command lines: argument parsing and one-line errors for each script in `scripts/`."""
