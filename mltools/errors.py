"""The one exception family of mltools.

Library code raises these with a one-line, actionable message; the CLI turns
them into ``Error: <message>`` on stderr and exit status 2 in one place
(``mltools.cli.MltoolsGroup``), or 125 for commands that run a target program.
"""


class MltoolsError(Exception):
    """Base class: mltools could not do what was asked."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = " ".join(str(message).split())  # always one line


class UsageError(MltoolsError):
    """The arguments are inconsistent or name something that does not exist."""


class InputError(MltoolsError):
    """An input file or directory is missing, unreadable or malformed."""


class ToolNotFoundError(MltoolsError):
    """An external program mltools needs is not installed."""


class SubprocessError(MltoolsError):
    """An external program failed or timed out."""


class MissingDependencyError(MltoolsError):
    """An optional Python dependency (an extra) is not installed."""


class NativeNotBuiltError(MltoolsError):
    """A compiled part of mltools is missing: the package was not built."""
