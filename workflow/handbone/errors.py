"""The errors a user can fix: ``handbone`` prints their message (which names
the file or option) and exits with 1; any other exception is a bug and keeps
its traceback.

Each also derives from the built-in error it refines, so callers that catch
``ValueError`` or ``FileNotFoundError`` keep working.
"""


class HandboneError(Exception):
    """A problem with the user's input, config or environment."""


class ConfigError(HandboneError, ValueError):
    """An option (config.yaml or a command-line flag) that cannot work."""


class DataError(HandboneError, ValueError):
    """Bad input data; the message names the file(s) and the problem."""


class MissingInput(HandboneError, FileNotFoundError):
    """A file or folder a stage reads does not exist."""


class SubmissionError(HandboneError, ValueError):
    """A submission file that the competition would reject."""


class MissingWeights(ConfigError):
    """Pretrained weights a model needs are not in the weights cache."""
