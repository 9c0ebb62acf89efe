"""The kit's version, on the ground floor: every stage may read it without importing the package's face."""

__version__ = "0.1.0"
