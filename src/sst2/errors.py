"""Errors caused by the user's input (files, options, directories): printed without a traceback."""


class UserError(Exception):
    """Base class; the CLI prints the message and exits with status 2."""


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An exception's message folded onto one line and cut to ``limit`` characters, for quoting."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
