"""``scriptserve predict``: one prediction from JSON or .npy inputs."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli.connection import client_options, make_client, reports_errors
from app.cli.inputs import input_options, load_inputs
from app.cli.output import console, print_json


def named_results(value: Any, name: str = "output") -> list[tuple[str, Any]]:
    """Flatten a predict result into (label, array) pairs for display."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in named_results(v, f"{k}")]
    if isinstance(value, (list, tuple)):
        return [pair for i, v in enumerate(value) for pair in named_results(v, f"{name}[{i}]")]
    return [(name, value)]


def show(result: Any) -> None:
    """Each output with its dtype and shape, then its values."""
    import numpy as np

    out = console()
    for label, value in named_results(result):
        array = np.asarray(value)
        out.print(f"[bold]{label}[/]  {array.dtype} {tuple(array.shape)}")
        out.print(np.array2string(array, threshold=200, edgeitems=4, max_line_width=100),
                  markup=False)


@reports_errors
def predict(args: argparse.Namespace) -> int:
    inputs = load_inputs(args.data, args.input)
    with make_client(args) as client:
        if args.v2:
            result: Any = client.infer(args.name, inputs, version=args.version,
                                       output="json" if args.json else "numpy")
        else:
            result = client.predict(args.name, inputs, version=args.version,
                                    output="json" if args.json else "numpy")
    if args.save:
        import numpy as np

        arrays = named_results(result)
        if len(arrays) != 1:
            raise ValueError(f"--save needs a single-tensor output; this one has {len(arrays)}")
        np.save(args.save, np.asarray(arrays[0][1]))
    if args.json:
        print_json(result, indent=False)
    else:
        show(result)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", parents=[client_options()],
                       help="predict with a model (inputs from JSON or .npy files)")
    p.add_argument("name")
    input_options(p)
    p.add_argument("--json", action="store_true", help="print the outputs as JSON")
    p.add_argument("--v2", action="store_true",
                   help="use the Open Inference Protocol (binary tensors, exact dtypes, "
                   "outputs by name)")
    p.add_argument("--save", metavar="FILE.npy", help="also save a single-tensor output as .npy")
    p.set_defaults(func=predict)
