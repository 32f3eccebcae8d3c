"""Exceptions whose messages name the file, column or config key at fault."""


class SectorkitError(Exception):
    """Base class for errors the CLI reports as one line, without a traceback."""


class DataError(SectorkitError, ValueError):
    """Input data is missing, malformed or inconsistent (the message names the file/column)."""


class ConfigError(SectorkitError, ValueError):
    """A configuration value or choice is invalid (the message names the config key)."""
