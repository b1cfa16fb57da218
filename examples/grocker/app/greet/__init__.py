"""A tiny app whose greeting comes from a C extension."""

from greet._native import greeting

__all__ = ["greeting"]
