"""The one base class for errors a user can fix."""

from __future__ import annotations


class QHybridError(ValueError):
    """Bad user input or an unrecoverable run condition, with a message that says how to fix it.

    Every part of the toolkit raises a subclass of this (never an ``assert`` or a traceback deep in a
    library) when the cause is something the user passed or configured. The ``qhybrid`` command
    prints the message without a traceback and exits with status 2.
    """


class ConfigError(QHybridError):
    """A configuration file or ``--set`` override does not fit the config dataclass."""


class NonFiniteLossError(QHybridError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""
