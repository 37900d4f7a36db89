"""User-facing errors: one clear line, non-zero exit, no traceback wall."""


class UserError(Exception):
    """An error caused by input or configuration the user can fix; printed as one line."""

    exit_code = 2


class DataError(UserError):
    """Malformed or invalid dataset file; the message names file and line."""


class ParamsError(UserError):
    """Invalid value in params.yaml."""


class ModelLoadError(UserError):
    """A model could not be loaded (unknown name, hub unreachable, missing package)."""


class SteeringError(UserError, ValueError):
    """A steering condition that cannot run on this model (layer out of range, wrong width, encoder)."""


class ArtefactError(UserError):
    """A stage's input artefact is missing, damaged or from an older run; the message names the file and what to
    run (`dvc pull` or `dvc repro <stage>`)."""
