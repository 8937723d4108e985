"""The embedded registry server: a pure model and the frontends that serve it."""
from .embedded import EmbeddedRegistry
from .state import Registry

__all__ = ["EmbeddedRegistry", "Registry"]
