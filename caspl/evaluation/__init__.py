from .classification import Classification

__all__ = ["Classification"]
