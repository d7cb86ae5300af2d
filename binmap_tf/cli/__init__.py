"""The command lines on top of the library: one module per console script, plus their shared options (common)."""
