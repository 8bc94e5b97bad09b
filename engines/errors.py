"""Errors raised by engines; the server maps each to an HTTP status."""


class EngineError(Exception):
    """Base class. `param` names the request field at fault, when there is one."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class AudioDecodeError(EngineError):
    """The audio could not be decoded, or it holds no samples."""

    def __init__(self, message: str, param: str | None = "file"):
        super().__init__(message, param)


class AudioTooLongError(AudioDecodeError):
    """The decoded audio is longer than the configured limit."""


class ModelNotFoundError(EngineError):
    """No model of that name is registered."""

    def __init__(self, message: str):
        super().__init__(message, "model")


class ModelUnavailableError(EngineError):
    """The model is registered but cannot be served (weights missing, downloads off, engine not built)."""

    def __init__(self, message: str):
        super().__init__(message, "model")


class UnsupportedOptionError(EngineError):
    """A valid option that this model cannot honour (e.g. French on an English-only model)."""
