"""Choosing the default version: ``pin``, ``unpin``, ``rollback``."""

from __future__ import annotations

import argparse

from app.cli.connection import command_parents, make_client, reports_errors
from app.cli.output import console, print_json


@reports_errors
def change_default(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        if args.action == "pin":
            result = client.pin(args.name, args.version)
        elif args.action == "unpin":
            result = client.unpin(args.name)
        else:
            result = client.rollback(args.name)
    if args.json:
        print_json(result)
        return 0
    how = (f"pinned to version {result['pinned_version']}" if result["pinned_version"] is not None
           else "unpinned: the highest version serves")
    console().print(f"[bold]{result['name']}[/] default version {result['previous_default']} -> "
                    f"{result['default_version']} ({how})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parents = command_parents()

    p = sub.add_parser("pin", parents=parents,
                       help="serve this version when a request names none (every replica agrees)")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.set_defaults(func=change_default, action="pin")

    p = sub.add_parser("unpin", parents=parents, help="the highest version serves by default again")
    p.add_argument("name")
    p.set_defaults(func=change_default, action="unpin")

    p = sub.add_parser("rollback", parents=parents,
                       help="pin the highest version below the current default")
    p.add_argument("name")
    p.set_defaults(func=change_default, action="rollback")
