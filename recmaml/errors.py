"""Exceptions raised by recmaml. Every error a user can cause is a RecMamlError whose message names
the source (file, column, row, flag) and the fix; the CLI turns them into exit code 2."""


class RecMamlError(Exception):
    """Base class of every error recmaml raises on purpose."""


class DataError(RecMamlError, ValueError):
    """Input data is missing, malformed or inconsistent."""


class ConfigError(RecMamlError, ValueError):
    """A configuration file or flag is invalid."""


class CheckpointError(RecMamlError):
    """A model directory is missing, corrupt or of an incompatible format."""


def shown(value, limit: int = 60) -> str:
    """A value from the user's data as an error message quotes it: its repr, cut to `limit` characters
    (a 5 MB field must not make a 5 MB message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
