"""One exception family; each class fixes its HTTP status and error code."""

from __future__ import annotations

import re
from collections.abc import Callable


class ScriptServeError(Exception):
    """Base of every error the API reports to a client."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequestError(ScriptServeError):
    status_code = 400
    code = "bad_request"


class InvalidArchiveError(BadRequestError):
    code = "invalid_archive"


class UnsafeArchiveError(ScriptServeError):
    """The archive is a well-formed zip whose content the server refuses to run or unpack."""

    status_code = 422
    code = "unsafe_archive"


class UnauthorizedError(ScriptServeError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "missing or invalid bearer token") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ForbiddenError(ScriptServeError):
    """Authenticated, but this server does not allow the operation (e.g. source uploads off)."""

    status_code = 403
    code = "forbidden"


class NotFoundError(ScriptServeError):
    status_code = 404
    code = "not_found"


class ReadOnlyError(ScriptServeError):
    """The server serves a read-only model directory (``--model-dir``): no management writes."""

    status_code = 405
    code = "read_only"

    def __init__(self, action: str) -> None:
        super().__init__(
            f"{action} refused: this server serves the read-only model directory (--model-dir, "
            "SCRIPTSERVE_MODEL_DIR) and nothing else; to change what it serves, change the files "
            "there (on KServe: the InferenceService's storageUri) and roll out"
        )


class ConflictError(ScriptServeError):
    status_code = 409
    code = "conflict"


class PayloadTooLargeError(ScriptServeError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(ScriptServeError):
    status_code = 415
    code = "unsupported_media_type"


class InputError(ScriptServeError):
    """The request is well formed but does not fit the model (arity, rank, dtype)."""

    status_code = 422
    code = "invalid_input"


class DtypeMismatchError(InputError):
    """An input's dtype is not the model's and the cast policy does not convert it
    (``app.wire.casting``); the message names the input, the dtype sent and the one expected."""

    code = "dtype_mismatch"


class ModelExecutionError(InputError):
    """The model raised while running this request's input."""

    code = "model_error"


class OutputTooLargeError(InputError):
    """The model's output for this request is larger than the server returns."""

    code = "output_too_large"


class ModelLoadError(ScriptServeError):
    """An archive could not be loaded (at upload: the client's fault)."""

    status_code = 422
    code = "model_load_failed"


class CompileError(ScriptServeError):
    """An eager model could not be compiled to TorchScript (the upload's fault).

    The code names the reason, ``compile_<reason>`` (e.g. ``compile_trace_diverged``,
    ``compile_timeout``); unknown reasons report as ``compile_failed``.
    """

    status_code = 422
    code = "compile_failed"
    REASONS = frozenset({
        "trace_diverged", "script_diverged", "script_failed", "trace_failed", "round_trip_failed",
        "pickled_module", "bad_weights", "weights_mismatch", "bad_architecture", "bad_entrypoint",
        "bad_examples", "source_error", "timeout", "cpu_limit", "memory_limit", "crashed",
        "export_data_dependent", "export_failed", "export_diverged", "aoti_failed",
    })

    def __init__(self, message: str, reason: str = "failed") -> None:
        super().__init__(message)
        self.reason = reason if reason in self.REASONS else "failed"
        if self.reason != "failed":
            self.code = f"compile_{self.reason}"


class OverloadedError(ScriptServeError):
    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReadyError(ScriptServeError):
    status_code = 503
    code = "not_ready"


class DeadlineExceededError(ScriptServeError):
    status_code = 504
    code = "deadline_exceeded"


# An absolute filesystem path of two or more parts that is not inside a word, so that
# ``multipart/form-data`` and ``https://host/a/b`` stay (an API route in a message becomes
# <path> too: harmless).
PATH_PATTERN = re.compile(r"(?<![\w/.~-])/[^\s/\"'()<>,;:]+/[^\s\"'()<>,;:]*")
_MARKERS = ("RuntimeError: ", "Exception: ", "Error: ")


def redact_paths(text: str, replace: Callable[[str], str] | None = None) -> str:
    """Replace filesystem paths in a client-facing message (with ``<path>``, or ``replace(path)``)."""
    if replace is None:
        return PATH_PATTERN.sub("<path>", text)
    return PATH_PATTERN.sub(lambda m: replace(m.group(0)), text)


def exception_line(exc: BaseException | str, limit: int = 300) -> str:
    """The line of an exception that says what failed, trimmed to ``limit`` characters.

    TorchScript and libtorch errors carry an interpreter traceback: take the last
    ``...Error: message`` line's message. Otherwise the first line (the last one after a
    Python traceback); an empty message gives the exception's type name.
    """
    text = (exc if isinstance(exc, str) else str(exc)).strip()
    if not text:
        return "error" if isinstance(exc, str) else type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for marker in _MARKERS:
        hits = [ln for ln in lines if marker in ln]
        if hits:
            return hits[-1].split(marker, 1)[1][:limit]
    return (lines[-1] if "Traceback" in text else lines[0])[:limit]


def is_out_of_memory(exc: BaseException) -> bool:
    """Host or device memory ran out: MemoryError, CUDA OOM (also as TorchScript re-raises it
    in a plain RuntimeError), ``bad_alloc`` or ``can't allocate memory`` from libtorch."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "bad_alloc"))
