"""Streaming multipart parser: files go straight to disk under a byte limit."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.errors import BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError

MAX_FIELD_BYTES = 1024 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class UploadedFile:
    path: Path
    filename: str
    size: int = 0


@dataclass
class UploadForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)


async def read_multipart(
    request: Request, target: Path, max_bytes: int, file_fields: frozenset[str]
) -> UploadForm:
    """Parse a multipart body, writing the parts named in ``file_fields`` into ``target``."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UnsupportedMediaTypeError("expected a multipart/form-data body (curl -F ...)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"upload of {int(declared)} bytes exceeds the limit of {max_bytes}")
    form = UploadForm()
    state = _PartState()

    def on_part_begin() -> None:
        state.reset()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[state.header_field.decode("latin-1").lower()] = state.header_value
        state.header_field, state.header_value = b"", b""

    def on_headers_finished() -> None:
        _, opts = parse_options_header(state.headers.get("content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise BadRequestError("a multipart part has no name")
        state.name = name
        if b"filename" in opts or name in file_fields:
            if name not in file_fields:
                raise BadRequestError(
                    f"unexpected file field {name!r}; expected one of {sorted(file_fields)}"
                )
            if name in form.files:
                raise BadRequestError(f"file field {name!r} was sent twice")
            filename = opts.get(b"filename", b"").decode("utf-8", "replace")
            path = target / f"upload-{_SAFE.sub('_', name)}"
            form.files[name] = UploadedFile(path, filename)
            state.sink = open(path, "wb")  # noqa: SIM115 - closed in on_part_end / finally

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state.sink is not None:
            state.sink.write(chunk)
            form.files[state.name].size += len(chunk)
        else:
            state.value += chunk
            if len(state.value) > MAX_FIELD_BYTES:
                raise PayloadTooLargeError(f"form field {state.name!r} exceeds {MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        if state.sink is not None:
            state.sink.close()
            state.sink = None
        else:
            if state.name in form.fields:
                raise BadRequestError(f"form field {state.name!r} was sent twice")
            try:
                form.fields[state.name] = state.value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequestError(f"form field {state.name!r} is not UTF-8 text") from None

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLargeError(f"upload exceeds the limit of {max_bytes} bytes")
            parser.write(chunk)
        parser.finalize()
    except ClientDisconnect:
        raise BadRequestError("the client disconnected during the upload") from None
    except (BadRequestError, PayloadTooLargeError):
        raise
    except Exception as exc:  # the parser's own errors: malformed multipart
        raise BadRequestError(f"malformed multipart body: {exc}") from None
    finally:
        if state.sink is not None:
            state.sink.close()
    return form


class _PartState:
    def __init__(self) -> None:
        self.sink: IO[bytes] | None = None
        self.reset()

    def reset(self) -> None:
        self.headers: dict[str, bytes] = {}
        self.header_field = b""
        self.header_value = b""
        self.name = ""
        self.value = b""
