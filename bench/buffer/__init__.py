"""``python -m bench.buffer``: the adaptive buffer against the 4-slot capacity fake (see __main__)."""
