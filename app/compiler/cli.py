"""``scriptserve compile``: the server's compiler, offline, on your own machine."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from app.compiler.forms import BUILTIN_EXAMPLES, inspect_weights, resolve_architecture
from app.compiler.spec import (
    FORMATS,
    METHODS,
    ArchitectureSpec,
    CompileFailure,
    CompileSpec,
    PickledModuleSpec,
    SourceSpec,
    SpecError,
    parse_cli_example,
    parse_examples,
    parse_format,
    parse_init_kwargs,
)

EPILOG = """examples:
  scriptserve compile model.py:Classification --weights w.pt --example 1x320:float32 -o model.torchscript
  scriptserve compile Classification --weights w.safetensors -o clf.torchscript
  scriptserve compile net.py:make_net --init-kwargs '{"width": 64}' --example 8x3x32x32 -o net.torchscript

This runs your model's code in this process, as you (no isolation: it is your code)."""


def register(sub: Any) -> None:
    """Add the ``compile`` subcommand to the ``scriptserve`` parser."""
    p = sub.add_parser(
        "compile", help="compile an eager model to a checked TorchScript archive (offline)",
        description="Compile an eager PyTorch model to TorchScript with the server's checks: "
                    "script/trace/auto, trace divergence probes, save->load->compare.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="SOURCE.py:ENTRYPOINT; an architecture: Classification, "
                                 "InputConfirm, or package.module:Name; or 'pickled' (see "
                                 "--trust-pickled-module)")
    p.add_argument("--weights", type=Path, help="state_dict (torch.save) or .safetensors file")
    p.add_argument("--example", action="append", default=[], metavar="SHAPE[:DTYPE]",
                   help="one per input, e.g. 1x320:float32 (dtype defaults to float32)")
    p.add_argument("--example-json", metavar="JSON", help="example_inputs as JSON, as in the upload form")
    p.add_argument("--method", choices=METHODS, default="auto")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="torchscript (default), exported_program (method=export) or aoti (.pt2 packages)")
    p.add_argument("--init-kwargs", default="", metavar="JSON", help="keyword arguments for the class")
    p.add_argument("--optimize", action="store_true", help="freeze + optimize_for_inference, if it matches")
    p.add_argument("--accept-divergent-trace", action="store_true")
    p.add_argument("--trust-pickled-module", action="store_true",
                   help="unpickle a whole pickled module / checkpoint (runs the code it references)")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the archive")
    p.add_argument("--report", type=Path, help="also write the compile report here (JSON)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compile; 0 on success, 1 if compilation failed, 2 for bad arguments."""
    from app.compiler.compile import compile_eager
    from app.compiler.report import Redactor

    try:
        spec = _spec(args)
    except SpecError as exc:
        print(f"scriptserve compile: {exc}", file=sys.stderr)
        return 2
    output = args.output.resolve()
    partial = output.with_name(f".{output.name}.partial")
    try:
        report = compile_eager(spec, Path.cwd(), partial, Redactor(every_path=False))
    except CompileFailure as exc:
        print(f"scriptserve compile: failed ({exc.reason}): {exc.message}", file=sys.stderr)
        partial.unlink(missing_ok=True)
        return 1
    os.replace(partial, output)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    _summarize(report, output)
    return 0


def _spec(args: argparse.Namespace) -> CompileSpec:
    examples = parse_examples(args.example_json) if args.example_json else [
        parse_cli_example(e) for e in args.example]
    common: dict[str, Any] = {
        "method": "export" if args.format in ("exported_program", "aoti") else args.method,
        "format": parse_format(args.format or "", args.method), "examples": examples,
        "init_kwargs": parse_init_kwargs(args.init_kwargs),
        "optimize": args.optimize, "accept_divergent_trace": args.accept_divergent_trace,
    }
    if args.weights is not None:
        if not args.weights.is_file():
            raise SpecError(f"no such weights file: {args.weights}")
        info = inspect_weights(args.weights)
        if info.format == "pickle" and not args.trust_pickled_module:
            raise SpecError(info.refusal() + " (or pass --trust-pickled-module for your own file)")
        common.update(weights_file=str(args.weights.resolve()), weights_format=info.format,
                      weights_name=str(args.weights))
    spec: CompileSpec
    file_part, _, entry = args.model.rpartition(":")
    if file_part.endswith(".py") or (file_part and Path(file_part).is_file()):
        source = Path(file_part).resolve()
        if not source.is_file():
            raise SpecError(f"no such source file: {file_part}")
        spec = SourceSpec(**common, source_file=str(source), source_name=str(file_part), entrypoint=entry)
    elif args.model == "pickled":
        if common.get("weights_format") != "pickle":
            raise SpecError("'pickled' compiles a whole pickled module: give it as --weights "
                            "with --trust-pickled-module")
        spec = PickledModuleSpec(**common)
    else:
        path = resolve_architecture(args.model, [args.model] if ":" in args.model else [])
        common["examples"] = common["examples"] or list(BUILTIN_EXAMPLES.get(path, []))
        spec = ArchitectureSpec(**common, architecture=path)
    if not spec.examples:
        raise SpecError("give example inputs: --example 1x320:float32 (one per input)")
    return spec


def _summarize(report: dict[str, Any], output: Path) -> None:
    diffs = [c["max_abs_diff"] for c in report["checks"].get("compiled_vs_eager", [])
             if isinstance(c.get("max_abs_diff"), (int, float))]
    probes = len(report["checks"].get("compiled_vs_eager", []))
    how = "torch.export" if report["method"] == "export" else f"torch.jit.{report['method']}"
    print(f"compiled {report['model']} with {how}: {report['why']}", file=sys.stderr)
    print(f"checked on {probes} inputs against the eager model: max abs diff {max(diffs, default=0):.3g}; "
          f"saved, loaded back and compared again", file=sys.stderr)
    for warning in report.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {output} ({output.stat().st_size} bytes) in {report['seconds']:.2f} s", file=sys.stderr)
