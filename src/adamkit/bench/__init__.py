"""adamkit bench: compare optimizers fairly on test functions and real tasks (uses only adamkit's public API)."""
