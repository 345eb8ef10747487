"""Errors that mean "what you gave samkit is wrong", as opposed to a bug in samkit.

The command line and the studio show a :class:`SamkitError` as a one-line message (or a 400
answer); any other exception is reported as an internal error with its traceback, because it
is a bug to fix rather than a mistake of the user's.
"""

from __future__ import annotations


class SamkitError(Exception):
    """A problem with the user's input (a file, an image, a prompt, a setting). The message
    says what was wrong and what to do."""


class InputError(SamkitError, ValueError):
    """A bad value: an image, a prompt, a setting, a file's contents."""


class InputTypeError(InputError, TypeError):
    """A value of the wrong type (e.g. a list where an array of points is expected)."""


__all__ = ["InputError", "InputTypeError", "SamkitError"]
