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


class RawInputsRefused(PrecisionRefused):
    """A raw-input bundle was not written: the model's preprocessing cannot be expressed in the graph. The
    message names what."""


def interrupted(error: BaseException) -> bool:
    """Whether a Ctrl-C (KeyboardInterrupt) is behind `error`: torch's exporters wrap it in their own errors,
    and one that lands in a C extension's import comes out as ImportError("initialization failed")."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
