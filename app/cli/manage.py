"""Model management: ``upload``, ``models``, ``info``, ``code``, ``download``, ``delete``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.cli.connection import client_options, command_parents, make_client, reports_errors
from app.cli.output import console, print_json

PROGRESS_MIN_BYTES = 1 << 20  # below this a bar only flickers


@contextmanager
def transfer_bar(label: str, size: int, mode: bool | None) -> Iterator[Any]:
    """A rich progress bar on stderr; yields the client's ``progress`` callback (or None).

    ``mode`` None shows it for files of 1 MiB or more when stderr is a terminal.
    """
    show = mode if mode is not None else (sys.stderr.isatty() and size >= PROGRESS_MIN_BYTES)
    if not show:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console(stderr=True)) as bar:
        task = bar.add_task(label, total=size or None)

        def update(done: int, total: int, stage: str | None = None) -> None:
            if stage is not None:  # the transfer is over: show where the server is
                bar.update(task, description=f"{label}: {stage}")
            else:
                bar.update(task, completed=done, total=total or None)

        yield update


@contextmanager
def upload_display(label: str, size: int, mode: bool | None) -> Iterator[tuple[Any, Any]]:
    """The transfer bar, then the operation's stage on the same line: (progress, on_stage).

    On a terminal the stage replaces the bar's label, or shows as a spinner line when the file
    is too small for a bar; ``--no-progress`` and output that is not a terminal show neither."""
    with transfer_bar(label, size, mode) as bar:
        if bar is not None:
            yield bar, lambda record: bar(-1, -1, record["stage"])
            return
        if mode is False or not sys.stderr.isatty():
            yield None, None
            return
        with console(stderr=True).status(f"{label}: sending") as status:
            yield None, lambda record: status.update(f"{label}: {record['stage']}")


def _fields(pairs: list[str] | None) -> dict[str, str]:
    fields = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        fields[key] = value
    return fields


@reports_errors
def upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    extra_files = _fields(args.attach)
    size = path.stat().st_size + sum(os.path.getsize(p) for p in extra_files.values())
    display = upload_display(f"upload {path.name}", size, args.progress)
    with make_client(args) as client, display as (bar, on_stage):
        info = client.upload(
            path, args.name, version=args.version, device=args.device, batching=args.batching,
            max_batch_size=args.max_batch_size, max_batch_delay_ms=args.max_batch_delay_ms,
            threads=args.threads, fields=_fields(args.field), files=extra_files, progress=bar,
            on_stage=on_stage,
        )
    if args.json:
        print_json(info)
    else:
        inputs = ", ".join(a["name"] for a in info["signature"]["inputs"])
        console().print(f"uploaded [bold]{info['name']}[/] version {info['version']} on "
                        f"{info['device']}: forward({inputs}) -> {info['signature']['returns']}")
    return 0


@reports_errors
def models(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        found = client.models()
    if args.json:
        print_json(found)
        return 0
    from rich.table import Table

    table = Table("name", "versions", "default", "device", "forward")
    for m in found:
        sig = m["signature"]
        inputs = ", ".join(a["name"] for a in sig["inputs"])
        table.add_row(m["name"], ", ".join(map(str, m["versions"])), str(m["default_version"]),
                      m["device"], f"({inputs}) -> {sig['returns']}")
    console().print(table if found else "no models")
    return 0


@reports_errors
def info(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        described = client.info(args.name)
    if args.json:
        print_json(described)
        return 0
    from rich.table import Table

    table = Table("version", "device", "forward", "archive", "batching", "created")
    for v in described["versions"]:
        sig, batching = v["signature"], v["batching"]
        args_text = ", ".join(a["name"] + ("?" if a["optional"] else "") for a in sig["inputs"])
        state = {True: "on", False: "off", None: "not probed"}[batching["enabled"]]
        table.add_row(str(v["version"]), v["device"], f"({args_text}) -> {sig['returns']}",
                      f"{v['archive_bytes']:,} B", f"{state} (max {batching['max_batch_size']})",
                      str(v["created_at"]))
    out = console()
    pin = " (pinned)" if described.get("pinned_version") is not None else ""
    out.print(f"[bold]{described['name']}[/] (default version {described['default_version']}{pin})")
    out.print(table)
    return 0


@reports_errors
def code(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        sys.stdout.write(client.code(args.name, version=args.version, view=args.view))
    return 0


@reports_errors
def download(args: argparse.Namespace) -> int:
    dest = Path(args.output) if args.output else Path.cwd()
    with make_client(args) as client:
        size = 0
        if args.progress is None and sys.stderr.isatty():  # size decides whether to show a bar
            versions = client.info(args.name)["versions"]
            chosen = [v for v in versions if args.version in (None, v["version"])]
            size = (chosen[-1]["archive_bytes"] or 0) if chosen else 0
        with transfer_bar(f"download {args.name}", size, args.progress) as bar:
            path = client.download(args.name, dest, version=args.version, progress=bar)
    if args.json:
        print_json({"name": args.name, "path": str(path), "bytes": path.stat().st_size})
    else:
        console().print(f"saved {path} ({path.stat().st_size:,} bytes)")
    return 0


@reports_errors
def delete(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        result = client.delete(args.name, args.version)
    if args.json:
        print_json(result)
    else:
        versions = ", ".join(map(str, result["deleted_versions"]))
        console().print(f"deleted {result['name']} version(s) {versions}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parents = command_parents()

    p = sub.add_parser("upload", parents=parents, help="upload a TorchScript archive as a new version")
    p.add_argument("name", help="model name")
    p.add_argument("file", help="the archive (ScriptModule.save)")
    p.add_argument("--version", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batching", choices=["auto", "on", "off"])
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--max-batch-delay-ms", type=float)
    p.add_argument("--threads", "--workers", dest="threads", type=int,
                   help="inference threads for this model (default: 1)")
    p.add_argument("-F", "--field", action="append", metavar="KEY=VALUE",
                   help="another form field (e.g. for eager uploads); repeatable")
    p.add_argument("--attach", action="append", metavar="FIELD=PATH",
                   help="another file in the form (e.g. weights or code); repeatable")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar, then the server's stage (default: on a terminal; the "
                        "bar for files of 1 MiB or more)")
    p.set_defaults(func=upload)

    p = sub.add_parser("models", parents=parents, help="list models")
    p.set_defaults(func=models)

    p = sub.add_parser("info", parents=parents, help="describe a model's versions")
    p.add_argument("name")
    p.set_defaults(func=info)

    p = sub.add_parser("code", parents=[client_options()], help="print the TorchScript code that will run")
    p.add_argument("name")
    p.add_argument("--version", type=int)
    p.add_argument("--view", choices=["code", "graph", "inlined"], default="code")
    p.set_defaults(func=code)

    p = sub.add_parser("download", parents=parents, help="download the archive (loads in C++)")
    p.add_argument("name")
    p.add_argument("-o", "--output", help="file or folder (default: ./NAME-vN.torchscript)")
    p.add_argument("--version", type=int)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: for files of 1 MiB or more on a terminal)")
    p.set_defaults(func=download)

    p = sub.add_parser("delete", parents=parents, help="delete a version, or the whole model")
    p.add_argument("name")
    p.add_argument("--version", type=int, help="only this version (default: every version)")
    p.set_defaults(func=delete)
