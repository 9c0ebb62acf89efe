"""A function named by its module, imported when it is first called.

The kit's tables name code that needs torch or a converter (a target's exporter and quantizer, a head's pooling):
a row holds `Lazy("dfedge.export.onnx", "export")` instead of the function, so that what reads only the tables (the
command line's --help, the docs table) imports none of it. tests/test_architecture.py counts a module named in a
string as an import of the module that names it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Lazy:
    module: str  # the module's full name (dfedge.export.onnx)
    name: str  # the function's name in it

    def resolve(self):
        """The function itself (its module imported, once: later calls find it in sys.modules)."""
        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)
