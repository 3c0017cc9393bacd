"""The one exception analysis raises for mistakes a user can fix.

The command line prints ``error: <message>`` and exits with code 2 for it.
It derives from :class:`scaling.errors.UserError` so one ``except`` in the
console script catches configuration, store and analysis mistakes alike.
"""

from scaling.errors import UserError


class AnalysisError(UserError, ValueError):
    """Input that cannot be analysed: degenerate data, an unknown column, an empty store."""
