"""Model families, one module each; importing this package registers every one of them.

A family module builds its network from a backbone and a ``ModelSpec`` and registers itself
with ``detseg.models.family.register_family`` next to its builder. Every module in this folder
is imported here, so adding a family is adding one file (see docs/adding-a-family.md).
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
