"""``make demo``: run the example DAGs against a local Vantax emulator and show what was sent."""
