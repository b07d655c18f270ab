"""Errors for bad user input: the message names the problem and how to fix it."""


class InputError(ValueError):
    """A file, option or selection that cannot be used as given. The command line prints only the message."""


class InstabilityError(InputError):
    """A simulation that blew up (non-finite energies, absurd temperature): the time step is too large."""
