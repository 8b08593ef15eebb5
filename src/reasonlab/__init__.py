"""reasonlab: controlled experiments on how small sequence models learn to reason."""

__version__ = "0.1.0"
