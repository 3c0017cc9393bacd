"""Exceptions that carry a user-facing, one-line message.

The command line catches these, prints ``error: <message>`` and exits with
code 2. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: a bad config, a missing file, bad SQL."""


class ConfigError(UserError, ValueError):
    """A sweep config that cannot run. The message names the key and the value."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}")


class StoreError(UserError):
    """A results store that cannot be read or written."""
