"""Code both stages use: atomic I/O, the dataset registry, the label-set format and its validation."""

__version__ = "0.1.0"
