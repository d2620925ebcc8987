"""qhybrid: the shared core of the toolkit (errors, configs, run folders, the training loop).

Importing ``qhybrid`` is cheap: torch, qiskit and transformers load only when a submodule needs them.
"""

from __future__ import annotations

from qhybrid.errors import ConfigError, NonFiniteLossError, QHybridError

__version__ = "0.1.0"

__all__ = ["ConfigError", "NonFiniteLossError", "QHybridError", "__version__"]
