"""Errors caused by the user's input (files, options, directories): printed without a traceback."""


class UserError(Exception):
    """Base class; the CLI prints the message and exits with status 2."""
