"""One root exception for everything the terminal reports to a person.

Each error says what went wrong, where, and what to do, and carries the exit
status the CLI uses.  Like gpiozero's exceptions they also subclass the
fitting builtin so callers can catch them either way.
"""

from __future__ import annotations


class FacepayError(Exception):
    """A problem a person can act on: ``what`` happened at ``where``; ``hint`` says what to do."""

    exit_code = 2

    def __init__(self, what: str, where: str | None = None, hint: str | None = None):
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self, where: bool = True) -> str:
        """What, where and what to do on one line; ``where=False`` leaves the place out (the caller says it)."""
        text = f"{self.where}: {self.what}" if self.where and where else self.what
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(FacepayError, ValueError):
    """The configuration file or a setting in it is wrong."""


class UsageError(FacepayError, ValueError):
    """A command was given arguments it cannot use."""


class InputError(FacepayError, ValueError):
    """An input file (a photo, an image, a scenario) cannot be used."""


class HardwareError(FacepayError, OSError):
    """A camera, reader, LED or disk cannot be reached."""


class StorageError(FacepayError, OSError):
    """The terminal's data directory or a database in it cannot be used."""


class NotFoundError(FacepayError, LookupError):
    """A shopper, sale or other record named on the command line does not exist."""

    exit_code = 1
