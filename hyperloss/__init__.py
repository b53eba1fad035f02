"""hyperloss: hyperbolic embeddings that respect a taxonomy."""

__version__ = "0.1.0"
