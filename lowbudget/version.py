"""The package's version, in a module of its own so that every layer can record it without
importing the package root (which sits above them all)."""

__version__ = "0.1.0"
