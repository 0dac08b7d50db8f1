"""rnnlab: recurrent neural networks in NumPy with hand-written, exact BPTT."""

__version__ = "0.1.0"
