"""Storage backends: one module each, all behind the writer contract in ``base``."""
