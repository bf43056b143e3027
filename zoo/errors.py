"""The one error type users see: the CLI turns it into one clear line and an exit code."""


class ZooError(Exception):
    """A problem the user can fix (bad name, bad data, failed check). Never shown as a traceback."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ParityError(ZooError):
    """An exported artefact disagrees with eager PyTorch beyond tolerance."""

    exit_code = 1


class PrecisionRefused(ZooError):
    """A reduced-precision bundle was not written: it misses its accuracy budget, or the precision does not
    fit the model (its weights would stay mostly float). The message says which and by how much."""

    exit_code = 1
