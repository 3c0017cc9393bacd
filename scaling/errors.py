"""Exceptions that carry a user-facing, one-line message.

The command line catches these, prints ``error: <message>`` and exits with
code 2. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: a bad config, a missing file, bad SQL."""


class ConfigError(UserError, ValueError):
    """A sweep config that cannot run. The message names the key and the value, on one line."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(one_line(f"config key '{key}': {message}"))


class StoreError(UserError):
    """A results store that cannot be read or written."""


MAX_MESSAGE = 1000


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, with line breaks and other unprintable characters
    escaped, so it prints as exactly one line however odd the value it quotes."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: 4 * limit])
    return text if len(text) <= limit else text[: limit - 3] + "..."


class StorageError(Exception):
    """The results store could not be reached or written within the retry bound (an outage, not a
    mistake in what the user asked). The command line prints ``error: <message>`` and exits 3."""
