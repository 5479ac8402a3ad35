"""User-facing error type: the CLI prints its message on one line and exits non-zero."""


class TfmkitError(ValueError):
    """Bad input or configuration. The message says what is wrong and what to do."""
