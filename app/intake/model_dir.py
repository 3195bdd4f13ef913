"""A read-only model directory (KServe's ``/mnt/models``) as the only source of versions.

Layouts (``Settings.model_dir``), served under ``Settings.model_name``:

- one archive file (``storageUri`` naming a file): version 1;
- a folder holding one archive (other files are ignored): version 1;
- numeric subfolders ``1/``, ``2/`` ... each holding one archive: those versions.

An archive is a TorchScript archive, an ExportedProgram or an AOTInductor package, told apart
by content, not by name. Eager checkpoints (``torch.save`` of a state_dict or a module) are
skipped and named in the error: compiling one needs its architecture and example inputs
(``scriptserve compile``, docs/compile.md), so they are compiled before, not at start.

Nothing is written to the directory. Each archive is copied into a staging folder of the
server's private store (a fresh folder under ``$TMPDIR``, an ``emptyDir`` on Kubernetes) and
goes the way of an upload (``Registry.add``): screening, trial load in a separate process,
load, commit. A version that fails is logged, shown by ``GET /ready`` under ``failed``, and
keeps the server not ready, so that Kubernetes never routes to a server missing its model.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.errors import ConflictError, InvalidArchiveError, ScriptServeError, exception_line, redact_paths
from app.intake.archive import SERVABLE_KINDS, ZipLimits, inspect_zip
from app.serving.registry import Registry
from app.store import ARCHIVE_FILE, ModelStore

log = logging.getLogger(__name__)
SCRATCH_PREFIX = "scriptserve-store-"


@dataclass(frozen=True)
class DirVersion:
    """One version the model directory holds: its archive, or why there is none."""

    version: int
    archive: Path | None
    kind: str = ""
    problem: str = ""


def with_scratch_store(settings: Settings) -> Settings:
    """``settings`` with the store in a fresh private folder under ``$TMPDIR`` and no example.

    A worker of a group (``serve --workers N``) is handed the folder its supervisor made, so
    that the workers share one store (and one generated admin token) and commit each version
    once."""
    if is_scratch(settings):
        return settings
    root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
    log.info("model directory mode: serving %s as %r; private store in %s",
             settings.model_dir, settings.model_name, root)
    return settings.model_copy(update={"model_store": root, "install_example": False})


def is_scratch(settings: Settings) -> bool:
    """True when ``settings`` already keep the store in a private folder ``with_scratch_store`` made."""
    store = settings.model_store
    return (settings.model_dir is not None and isinstance(store, Path)
            and store.name.startswith(SCRATCH_PREFIX))


def _visible(folder: Path) -> list[Path]:
    """Entries of ``folder`` without hidden ones (``..data`` of Kubernetes volumes, ``.git``)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _classify(path: Path, limits: ZipLimits | None) -> tuple[str, str]:
    """(kind, reason skipped): kind is a servable kind, ``hostile``, or empty when skipped."""
    try:
        info = inspect_zip(path, limits)
    except InvalidArchiveError:
        return "", "not a TorchScript or .pt2 archive"
    except ScriptServeError as exc:  # a hostile structure: refused as such, not skipped
        return "hostile", exc.message
    except OSError as exc:
        return "", f"unreadable ({exc.strerror or exc})"
    if info.kind not in SERVABLE_KINDS:
        return "", "an eager checkpoint (torch.save): not compiled at start; compile it first "\
                   "(scriptserve compile, docs/compile.md) and put the archive here"
    return info.kind, ""


def _pick(version: int, folder: Path, where: str, limits: ZipLimits | None) -> DirVersion:
    """The one archive directly in ``folder`` (``where``: the folder, for messages)."""
    found: list[tuple[Path, str]] = []
    skipped: list[str] = []
    for path in _visible(folder):
        if not path.is_file():
            continue
        kind, reason = _classify(path, limits)
        if kind:
            found.append((path, kind))
        else:
            skipped.append(f"{path.name} ({reason})")
    if len(found) == 1:
        return DirVersion(version, found[0][0], found[0][1])
    if found:
        names = ", ".join(p.name for p, _ in found)
        return DirVersion(version, None, problem=(
            f"{where} holds {len(found)} archives ({names}): put one archive there, or each "
            "version's archive in its own numeric folder 1/, 2/ ..."))
    return DirVersion(version, None, problem=(
        f"no TorchScript or .pt2 archive in {where}"
        + (f"; skipped: {'; '.join(skipped[:5])}" if skipped else " (it is empty)")))


def find_versions(root: Path, limits: ZipLimits | None = None) -> list[DirVersion]:
    """What the model directory says is served (see the module docstring for the layouts)."""
    if root.is_file():
        kind, reason = _classify(root, limits)
        if not kind:
            return [DirVersion(1, None, problem=f"{root.name} is {reason}")]
        return [DirVersion(1, root, kind)]
    if not root.is_dir():
        return [DirVersion(1, None, problem="the model directory does not exist")]
    numbered = [p for p in _visible(root) if p.is_dir() and p.name.isdigit() and int(p.name) >= 1]
    if not numbered:
        return [_pick(1, root, "the model directory", limits)]
    versions: dict[int, DirVersion] = {}
    for folder in numbered:
        version = int(folder.name)
        if version in versions:
            versions[version] = DirVersion(version, None, problem=f"two folders name version {version}")
        else:
            versions[version] = _pick(version, folder, f"{folder.name}/", limits)
    return [versions[v] for v in sorted(versions)]


async def install(registry: Registry, store: ModelStore, settings: Settings,
                  sync: Callable[[], Awaitable[None]]) -> bool:
    """Screen, load, commit and serve every version of the model directory; True if all serve.

    A version another worker of the group committed first (a conflict) is loaded from the
    shared store by ``sync``."""
    assert settings.model_dir is not None
    name = settings.model_name
    gate = registry.loader.gate
    found = await asyncio.to_thread(find_versions, settings.model_dir, gate.zip_limits if gate else None)
    ok = True
    committed_elsewhere: list[int] = []
    for entry in found:
        key = f"{name}/{entry.version}"
        if entry.archive is None:
            registry.load_failures[key] = entry.problem
            log.error("model directory %s: version %d not served: %s", settings.model_dir,
                      entry.version, entry.problem)
            ok = False
            continue
        staging = store.new_staging_dir()
        try:
            await asyncio.to_thread(shutil.copyfile, entry.archive, staging / ARCHIVE_FILE)
            await registry.add(
                name, staging, entry.version, None, registry.loader.default_policy,
                extra_meta={"source": "model_dir", "format": entry.kind,
                            "original_filename": entry.archive.name[:200]},
            )
        except ConflictError:  # a sibling worker committed it first: serve the stored one
            store.discard(staging)
            committed_elsewhere.append(entry.version)
            continue
        except Exception as exc:
            store.discard(staging)
            reason = exc.message if isinstance(exc, ScriptServeError) else exception_line(exc)
            registry.load_failures[key] = redact_paths(reason)[:300]
            log.error("model directory %s: %s (version %d) not served: %s", settings.model_dir,
                      entry.archive.name, entry.version, reason)
            ok = False
            continue
        registry.load_failures.pop(key, None)
        log.info("serving %s version %d from the model directory (%s)", name, entry.version,
                 entry.archive.name)
    if committed_elsewhere:
        await sync()
        for version in committed_elsewhere:
            try:
                registry.get(name, version)
            except ScriptServeError as exc:
                registry.load_failures[f"{name}/{version}"] = redact_paths(exc.message)[:300]
                ok = False
    return ok


def remove_scratch_store(settings: Settings) -> None:
    """Remove the private store ``with_scratch_store`` made (at shutdown; a group's supervisor
    removes the one its workers share)."""
    if is_scratch(settings):
        shutil.rmtree(Path(settings.model_store), ignore_errors=True)
