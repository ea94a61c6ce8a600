"""The one exception type that means "the user gave bad input": the CLI prints it on one line, exit 2."""


class InputError(ValueError):
    """Bad input from the user (a flag, a file, a folder): the message names the value and what is allowed."""
