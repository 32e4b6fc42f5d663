"""The one base exception of ReadingRoom, and its families.

Every message says what went wrong and what to do next.
"""


class ReadingRoomError(Exception):
    """Base class of every error ReadingRoom raises on purpose."""


class ConfigError(ReadingRoomError):
    """A setting is missing or invalid; the message names it and its valid values."""


class StorageError(ReadingRoomError):
    """Writing a file failed (disk full, permissions, I/O)."""
