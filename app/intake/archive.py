"""Inspecting uploaded zips before torch sees them: structure, limits, format.

Only the zip's directory is read here (cheap, no decompression). What the entries contain
(source, pickles) is screened by ``app.intake.screening``.
"""

from __future__ import annotations

import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.errors import InvalidArchiveError, PayloadTooLargeError, UnsafeArchiveError

TORCHSCRIPT_HINT = (
    "expected a TorchScript archive as written by ScriptModule.save() / torch.jit.save() "
    "(e.g. torch.jit.script(model).save('model.torchscript')), an ExportedProgram saved with "
    "torch.export.save(), or an AOTInductor package (torch._inductor.aoti_compile_and_package)"
)
# Entries this large must not be compressed more than the ratio allows; tiny text entries
# (code, version) can compress well legitimately.
RATIO_MIN_BYTES = 1024 * 1024
MAX_NAME_CHARS = 1024
_LOCAL_HEADER_BYTES = 30
_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
NESTED_SUFFIXES = (
    ".zip", ".jar", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar",
    ".pt", ".pth", ".pt2", ".torchscript", ".whl", ".egg", ".so", ".dll",
)
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ZipLimits:
    """Structural limits of an uploaded archive (``Settings.max_archive_*``)."""

    max_entries: int = 10_000
    max_uncompressed_bytes: int = 8 * 1024**3
    max_compression_ratio: float = 100.0


@dataclass(frozen=True)
class ArchiveInfo:
    """What an uploaded zip turned out to be."""

    kind: str  # "torchscript", "exported_program", "aoti" or "checkpoint"
    prefix: str
    uncompressed_bytes: int


def _quote(name: str) -> str:
    return repr(name[:120] + ("..." if len(name) > 120 else ""))


def check_entry_name(name: str) -> str | None:
    """Why ``name`` is not a safe relative entry path, or None."""
    if not name:
        return "an empty name"
    if len(name) > MAX_NAME_CHARS:
        return f"a name longer than {MAX_NAME_CHARS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a control character in its name"
    if "\\" in name:
        return "a backslash in its name"
    if name.startswith("/") or _DRIVE.match(name):
        return "an absolute path"
    parts = name.rstrip("/").split("/")
    if any(p in {"", ".", ".."} for p in parts):
        return "'.', '..' or an empty part in its path"
    return None


def _check_entries(infos: list[zipfile.ZipInfo], limits: ZipLimits, start_dir: int,
                   nested_ok: Callable[[str], bool] | None = None) -> int:
    """Refuse hostile structure; return the declared uncompressed total."""
    if len(infos) > limits.max_entries:
        raise UnsafeArchiveError(
            f"the archive has {len(infos)} entries (limit {limits.max_entries})"
        )
    total = sum(i.file_size for i in infos)
    if total > limits.max_uncompressed_bytes:
        raise PayloadTooLargeError(
            f"the archive declares {total} bytes uncompressed (limit {limits.max_uncompressed_bytes})"
        )
    seen: set[str] = set()
    compressed = 0
    for info in infos:
        name = info.filename
        problem = check_entry_name(info.orig_filename)  # as stored: zipfile cuts names at NUL
        if problem:
            raise UnsafeArchiveError(f"archive entry {_quote(name)} has {problem}")
        if name in seen:
            raise UnsafeArchiveError(f"archive entry {_quote(name)} appears more than once")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(f"archive entry {_quote(name)} is encrypted")
        mode = info.external_attr >> 16
        if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise UnsafeArchiveError(f"archive entry {_quote(name)} is {kind}")
        if info.compress_type not in _COMPRESSION:
            raise UnsafeArchiveError(
                f"archive entry {_quote(name)} uses compression method {info.compress_type} "
                "(only stored and deflate are accepted)"
            )
        if name.lower().endswith(NESTED_SUFFIXES) and not (nested_ok and nested_ok(name)):
            raise UnsafeArchiveError(
                f"archive entry {_quote(name)} looks like a nested archive or binary"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_MIN_BYTES and ratio > limits.max_compression_ratio:
            raise UnsafeArchiveError(
                f"archive entry {_quote(name)} expands {ratio:.0f}:1 (limit "
                f"{limits.max_compression_ratio:g}:1): refused as a zip bomb"
            )
        compressed += info.compress_size
    if total > RATIO_MIN_BYTES and total / max(compressed, 1) > limits.max_compression_ratio:
        raise UnsafeArchiveError(
            f"the archive expands {total / max(compressed, 1):.0f}:1 (limit "
            f"{limits.max_compression_ratio:g}:1): refused as a zip bomb"
        )
    _check_overlap(infos, start_dir)
    return total


def _check_overlap(infos: list[zipfile.ZipInfo], start_dir: int) -> None:
    """Entries must not share bytes: overlapping entries are how small zips inflate hugely."""
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for info, nxt in zip(ordered, ordered[1:] + [None]):
        end = nxt.header_offset if nxt is not None else start_dir
        span = _LOCAL_HEADER_BYTES + len(info.orig_filename.encode("utf-8", "replace"))
        if info.header_offset + span + info.compress_size > end:
            raise UnsafeArchiveError(
                f"archive entry {_quote(info.filename)} overlaps the next entry"
            )


def inspect_zip(path: Path, limits: ZipLimits | None = None) -> ArchiveInfo:
    """Check a zip's structure and classify it as torch wrote it; 400 / 413 / 422 otherwise."""
    limits = limits or ZipLimits()
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            if fh.read(4) == b"PK\x03\x04":
                raise InvalidArchiveError(
                    "the upload is a damaged or truncated zip archive (its directory at the end "
                    "is missing)"
                )
        raise InvalidArchiveError(f"the upload is not a zip archive: {TORCHSCRIPT_HINT}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            start_dir = zf.start_dir
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise InvalidArchiveError(
            "the upload is a damaged or truncated zip archive (its directory cannot be read)"
        ) from None
    names = [i.filename for i in infos if not i.is_dir()]
    prefixes = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(prefixes) != 1 or any("/" not in n for n in names):
        _check_entries(infos, limits, start_dir)  # a hostile structure is refused as such first
        raise InvalidArchiveError(
            f"the archive does not have the single top-level folder torch writes: {TORCHSCRIPT_HINT}"
        )
    prefix = prefixes.pop()
    has = set(names).__contains__
    if has(f"{prefix}/{PT2_FORMAT_ENTRY}"):
        return _inspect_pt2(path, infos, limits, start_dir, prefix, names)
    size = _check_entries(infos, limits, start_dir)
    if not has(f"{prefix}/data.pkl"):
        raise InvalidArchiveError(f"the archive has no data.pkl: {TORCHSCRIPT_HINT}")
    code = any(n.startswith(f"{prefix}/code/") for n in names)
    if code and has(f"{prefix}/constants.pkl"):
        return ArchiveInfo("torchscript", prefix, size)
    return ArchiveInfo("checkpoint", prefix, size)


# PT2 archives (torch.export.save, AOTInductor packages) -------------------------------------
PT2_FORMAT_ENTRY = "archive_format"
PT2_MODELS = "models/"  # models/<name>.json: a serialized ExportedProgram
PT2_AOTI = "data/aotinductor/"  # data/aotinductor/<name>/*.so: an AOTInductor package
PT2_SAMPLE_INPUTS = "data/sample_inputs/"


def _pt2_nested_ok(prefix: str) -> Callable[[str], bool]:
    """The nested files a PT2 archive holds by design: sample inputs and AOTInductor's library."""
    def ok(name: str) -> bool:
        inner = name[len(prefix) + 1:] if name.startswith(prefix + "/") else ""
        parts = inner.split("/")
        if inner.startswith(PT2_SAMPLE_INPUTS) and len(parts) == 3 and inner.endswith(".pt"):
            return True
        return inner.startswith(PT2_AOTI) and len(parts) == 4 and inner.endswith(".so")
    return ok


def _inspect_pt2(path: Path, infos: list[zipfile.ZipInfo], limits: ZipLimits, start_dir: int,
                 prefix: str, names: list[str]) -> ArchiveInfo:
    size = _check_entries(infos, limits, start_dir, _pt2_nested_ok(prefix))
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{prefix}/{PT2_FORMAT_ENTRY}") as fh:
            marker = fh.read(16)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise InvalidArchiveError("the upload is a damaged zip archive (an entry cannot be read)") from None
    if marker.strip() != b"pt2":
        raise InvalidArchiveError(f"the archive's {PT2_FORMAT_ENTRY} is not 'pt2': {TORCHSCRIPT_HINT}")
    inner = [n[len(prefix) + 1:] for n in names]
    programs = [n for n in inner if n.startswith(PT2_MODELS) and n.endswith(".json")]
    libraries = [n for n in inner if n.startswith(PT2_AOTI)]
    if programs and libraries:
        raise InvalidArchiveError(
            "the .pt2 archive holds both exported programs and an AOTInductor library; upload one "
            "of them (torch.export.save or aoti_compile_and_package output)")
    if libraries:
        return ArchiveInfo("aoti", prefix, size)
    if programs:
        return ArchiveInfo("exported_program", prefix, size)
    raise InvalidArchiveError(
        f"the .pt2 archive holds neither an exported program ({PT2_MODELS}*.json) nor an "
        f"AOTInductor library ({PT2_AOTI}): {TORCHSCRIPT_HINT}")


SERVABLE_KINDS = ("torchscript", "exported_program", "aoti")


def require_servable(path: Path, limits: ZipLimits | None = None) -> ArchiveInfo:
    """Raise a 400 unless ``path`` is a TorchScript archive, an ExportedProgram or an AOTI package."""
    info = inspect_zip(path, limits)
    if info.kind not in SERVABLE_KINDS:
        raise InvalidArchiveError(
            "the upload is a torch.save() checkpoint (a state_dict or a pickled module), not a "
            f"TorchScript archive: {TORCHSCRIPT_HINT}"
        )
    return info


def require_torchscript(path: Path, limits: ZipLimits | None = None) -> ArchiveInfo:
    """Raise a 400 unless ``path`` is a TorchScript archive (and its structure is safe)."""
    info = inspect_zip(path, limits)
    if info.kind != "torchscript":
        raise InvalidArchiveError(
            "the upload is a torch.save() checkpoint (a state_dict or a pickled module), not a "
            f"TorchScript archive: {TORCHSCRIPT_HINT}"
        )
    return info
