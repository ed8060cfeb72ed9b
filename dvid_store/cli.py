"""The ``dvid-store`` command-line tool.

Commands: ``info``, ``ls``, ``export``, ``import``, ``copy`` and ``demo`` (see
``dvid-store COMMAND --help`` and the "Command line" page of the docs). The command
implementations live in :mod:`dvid_store.cli_commands`; this module builds the
parser and turns exceptions into one line on stderr and an exit code:

==== ==========================================================
0    success
1    an error (``dvid-store: error: <message>``; ``--debug`` adds the traceback)
2    a usage error (argparse's message)
130  interrupted by Ctrl-C (143: by SIGTERM); transfers say how to resume
==== ==========================================================
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

__all__ = ["build_parser", "main"]

PROG = "dvid-store"

_URL_HELP = (
    "host:port or http://host:port (a server); dvid://host:port/NODE (a node: UUID, unique prefix or "
    "prefix:branch); dvid://host:port/NODE/INSTANCE[/LEVEL] (an instance)"
)

_EPILOG = """\
URLs: host:port (a server), dvid://host:port/NODE (a node: a UUID, a unique prefix or
prefix:branch) and dvid://host:port/NODE/INSTANCE[/LEVEL] (an instance, at a pyramid level).
Coordinates and shapes are z,y,x voxels; boxes are z0,y0,x0:z1,y1,x1 with the stop corner
excluded (write --box=-64,0,0:0,64,64 when the start is negative).

Transfers (export, import, copy) run in parallel through dask and keep a journal of
finished chunks; if one is interrupted, run the same command again to resume it.
Tokens come from $DVID_TOKEN (and $DVID_ADMIN_TOKEN).

examples:
  dvid-store info localhost:8000
  dvid-store ls dvid://localhost:8000/a3f9:master
  dvid-store export dvid://localhost:8000/a3f9/grayscale --box 0,0,0:64,512,512 gray.zarr
  dvid-store import stack.tif dvid://localhost:8000/a3f9/grayscale --create
  dvid-store copy dvid://src:8000/a3f9/segmentation dvid://dst:8000/77c1 --create
  dvid-store demo --out demo-xy.png
"""


# ------------------------------------------------------------------ argument types
def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a parser so that its DvidInputError becomes an argparse usage error."""

    def convert(text: str) -> Any:
        from .errors import DvidInputError

        try:
            return parse(text)
        except DvidInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _box(text: str) -> Any:
    from .cli_commands.common import parse_box

    return _arg(parse_box)(text)


def _zyx(text: str) -> Any:
    from .cli_commands.common import parse_zyx

    return _arg(parse_zyx)(text)


def _positive_zyx(text: str) -> Any:
    value = _zyx(text)
    if any(v <= 0 for v in value):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive")
    return value


def _voxel_size(text: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give z,y,x sizes (or one size for all axes)") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give three positive sizes z,y,x (or one for all axes)")
    return values[0], values[1], values[2]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def _level(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a level number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: levels count from 0")
    return value


# ------------------------------------------------------------------ parser
def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every command takes, before or after the command name."""
    default: Any = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("common options")
    group.add_argument("-q", "--quiet", action="store_true", default=default(False),
                       help="no progress bars and no summaries (results and errors only)")
    group.add_argument("--debug", action="store_true", default=default(False),
                       help="show the traceback of an error")
    group.add_argument("--user", default=default(None), help="user name sent to DVID (default $DVID_USER or login)")
    group.add_argument("--app", default=default("dvid-store"), help="application name sent to DVID")
    group.add_argument("--timeout", type=float, default=default(120.0), metavar="SECONDS",
                       help="longest silence while waiting for or reading an answer (default 120)")
    group.add_argument("--retry-seconds", type=float, default=default(30.0), metavar="SECONDS",
                       help="how long a request is retried when the server is busy, unreachable or its "
                            "answer breaks off (default 30)")
    group.add_argument("--retries", type=_positive_int, default=default(None), metavar="N",
                       help="an extra cap on the attempts per request (default: only --retry-seconds bounds them)")
    group.add_argument("--deadline", type=float, default=default(600.0), metavar="SECONDS",
                       help="wall-clock limit of one request, its retries included (default 600)")
    group.add_argument("--throttle", action="store_true", default=default(False),
                       help="send DVID's throttle=true with block transfers (DVID runs few at once; "
                            "the others are retried)")


def _transfer_options(parser: argparse.ArgumentParser, *, box: bool = True) -> None:
    group = parser.add_argument_group("transfer options")
    if box:
        group.add_argument("--box", type=_box, metavar="Z0,Y0,X0:Z1,Y1,X1",
                           help="region in the source level's voxel coordinates, stop excluded "
                                "(default: the instance's extents)")
    group.add_argument("--chunks", type=_positive_zyx, metavar="Z,Y,X",
                       help="voxels per task, whole blocks of the target (default: about 8 MB)")
    group.add_argument("-j", "--workers", type=_positive_int, metavar="N",
                       help="tasks run at a time (default: the number of cores)")
    group.add_argument("--journal", metavar="FILE",
                       help="journal of finished chunks (default: one per transfer in "
                            "$XDG_CACHE_HOME/dvid_store/journals)")


def _create_options(parser: argparse.ArgumentParser) -> Any:
    group = parser.add_argument_group("creating the destination")
    group.add_argument("--create", action="store_true",
                       help="create the destination instance (it must not exist yet)")
    group.add_argument("--downres-levels", type=_level, metavar="N",
                       help="labelmap: lower-resolution levels DVID keeps (MaxDownresLevel)")
    return group


def build_parser() -> argparse.ArgumentParser:
    """The ``dvid-store`` argument parser (each subcommand sets ``run``)."""
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect DVID servers and move volumes between DVID, zarr, .npy and TIFF, in parallel.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, description: str, epilog: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=textwrap.fill(description, 88), epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common_options(sub, top=False)
        return sub

    info = command(
        "info", "describe a server, a node or an instance",
        "Describe what URL names: a server (version, repos), a node (its repo's instances and "
        "version DAG) or an instance (type, blocks, extents, voxel size, levels).",
        "examples:\n  dvid-store info localhost:8000\n  dvid-store info dvid://localhost:8000/a3f9:master\n"
        "  dvid-store info dvid://localhost:8000/a3f9/segmentation --json",
    )
    info.add_argument("url", metavar="URL", help=_URL_HELP)
    info.add_argument("--json", action="store_true", help="print DVID's JSON instead")
    info.set_defaults(run=_lazy("inspect", "run_info"))

    ls = command(
        "ls", "list repos, instances, levels or keys",
        "List what is inside URL, one per line: a server's repos, a node's instances, the "
        "levels of a voxel instance, the keys of a keyvalue instance.",
        "examples:\n  dvid-store ls localhost:8000\n  dvid-store ls dvid://localhost:8000/a3f9\n"
        "  dvid-store ls dvid://localhost:8000/a3f9/annotations-kv",
    )
    ls.add_argument("url", metavar="URL", help=_URL_HELP)
    ls.set_defaults(run=_lazy("inspect", "run_ls"))

    export = command(
        "export", "copy a box of an instance into a local OME-Zarr v3 store",
        "Read a box of one level of a DVID voxel instance (grayscale or labelmap) through dask "
        "and write it to OUT, a zarr v3 group with OME-Zarr 0.5 multiscales metadata and one "
        "array '0' (its 'dvid' attributes record the source and the box start as 'offset').",
        "examples:\n  dvid-store export dvid://localhost:8000/a3f9/grayscale --box 0,0,0:64,512,512 gray.zarr\n"
        "  dvid-store export dvid://localhost:8000/a3f9:master/segmentation/1 seg-s1.zarr --overwrite",
    )
    export.add_argument("url", metavar="URL", help="the instance: dvid://host:port/NODE/INSTANCE[/LEVEL]")
    export.add_argument("out", metavar="OUT", help="the zarr store to write (a directory, e.g. out.zarr)")
    export.add_argument("--scale", type=_level, metavar="LEVEL", help="pyramid level (default 0)")
    export.add_argument("--supervoxels", action="store_true", help="labelmap: supervoxel ids instead of bodies")
    export.add_argument("--zarr-chunks", type=_positive_zyx, metavar="Z,Y,X",
                        help="chunk shape of the zarr array (default: whole DVID blocks, about 1 MB)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it is a zarr store already")
    _transfer_options(export)
    export.set_defaults(run=_lazy("transfer", "run_export"))

    imp = command(
        "import", "write a zarr array, .npy file or TIFF stack into an instance",
        "Write IN (a zarr v3/v2 array or group, a .npy file or a TIFF stack; 2-d images are one "
        "z slice) into a DVID voxel instance through dask. Arrays exported by dvid-store go back "
        "to where they came from unless --offset says otherwise.",
        "examples:\n  dvid-store import stack.tif dvid://localhost:8000/a3f9/grayscale --create --voxel-size 8\n"
        "  dvid-store import seg.npy dvid://localhost:8000/a3f9/segmentation --offset 0,1024,1024\n"
        "  dvid-store import gray.zarr dvid://localhost:8000/77c1/grayscale",
    )
    imp.add_argument("input", metavar="IN", help="a .npy file, a .tif/.tiff stack or a zarr store")
    imp.add_argument("url", metavar="URL", help="the instance: dvid://host:port/NODE/INSTANCE[/LEVEL]")
    imp.add_argument("--offset", type=_zyx, metavar="Z,Y,X",
                     help="voxel coordinate of IN[0, 0, 0] (default: the 'dvid' offset of an export, else 0,0,0)")
    imp.add_argument("--scale", type=_level, metavar="LEVEL", help="pyramid level to write (default 0)")
    imp.add_argument("--dataset", metavar="NAME", help="array inside a zarr group (default: the first OME dataset)")
    group = _create_options(imp)
    group.add_argument("--labels", action="store_true", help="create a labelmap (uint64) from integer data")
    group.add_argument("--block-size", type=_positive_zyx, metavar="Z,Y,X", help="DVID block size of the new instance")
    group.add_argument("--voxel-size", type=_voxel_size, metavar="Z,Y,X",
                       help="voxel size in nanometers (default: from an export, else 8)")
    _transfer_options(imp, box=False)
    imp.set_defaults(run=_lazy("transfer", "run_import"))

    copy = command(
        "copy", "copy a box between servers, nodes or instances",
        "Copy a box of one level of a DVID voxel instance into another instance: on the same "
        "or another node or server. DST may be a node (the instance keeps its name) or an "
        "instance. labelmaps are copied as body ids unless --supervoxels.",
        "examples:\n  dvid-store copy dvid://a:8000/a3f9/segmentation dvid://b:8000/77c1 --create\n"
        "  dvid-store copy dvid://a:8000/a3f9/grayscale dvid://a:8000/a3f9/gray-crop --create "
        "--box 0,0,0:128,256,256",
    )
    copy.add_argument("src", metavar="SRC", help="the source instance: dvid://host:port/NODE/INSTANCE[/LEVEL]")
    copy.add_argument("dst", metavar="DST", help="the destination node or instance")
    copy.add_argument("--scale", type=_level, metavar="LEVEL", help="source pyramid level (default 0)")
    copy.add_argument("--supervoxels", action="store_true", help="labelmap: copy supervoxel ids")
    copy.add_argument("--offset", type=_zyx, metavar="Z,Y,X",
                      help="destination of the box's first voxel (default: the same coordinates)")
    _create_options(copy)
    _transfer_options(copy)
    copy.set_defaults(run=_lazy("transfer", "run_copy"))

    demo = command(
        "demo", "the README's main job on a throwaway local DVID",
        "Start a throwaway DVID server, write a synthetic EM-like grayscale volume and its "
        "segmentation through dask, read both back lazily as dask and xarray, commit and branch, "
        "print throughput figures, and save an XY slice with the labels overlaid as a PNG.",
        "example:\n  dvid-store demo --out demo-xy.png",
    )
    demo.add_argument("--out", metavar="PNG",
                      help="where to save the slice (default: demo-xy.png in dvid_store's cache folder, "
                           "~/.cache/dvid_store/demo/; the demo prints where it saved it)")
    demo.add_argument("--size", type=_positive_int, default=256, metavar="N",
                      help="edge of the cube in voxels (default 256)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the synthetic data")
    demo.add_argument("-j", "--workers", type=_positive_int, metavar="N", help="dask threads (default: cores)")
    demo.set_defaults(run=_lazy("demo", "run_demo"))
    return parser


def _lazy(module: str, name: str) -> Callable[..., int]:
    """The command function, imported only when that command runs (keeps --help fast)."""

    def run(ctx: Any, args: argparse.Namespace) -> int:
        from importlib import import_module

        command: Callable[..., int] = getattr(import_module(f".cli_commands.{module}", __package__), name)
        return command(ctx, args)

    return run


# ------------------------------------------------------------------ errors
def describe_error(exc: BaseException) -> str:
    """One line for an exception: DVID's message, the file that was missing, ..."""
    from .errors import DvidError, DvidHTTPError

    if isinstance(exc, DvidHTTPError):
        text = exc.message
        if exc.status is not None:
            text += f" (HTTP {exc.status} for {exc.method} {exc.url.split('?', 1)[0]})"
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or exc}: {exc.filename}"
    elif isinstance(exc, (DvidError, OSError)):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc} (unexpected; --debug shows the traceback)"
    return " ".join(text.split()) or type(exc).__name__


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that transfers stop like on Ctrl-C."""

    exit_code = 128 + signal.SIGTERM


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dvid-store`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .cli_commands.common import Context

    ctx = Context(
        quiet=args.quiet, debug=args.debug, user=args.user, app=args.app, timeout=args.timeout,
        retry_seconds=args.retry_seconds, retries=args.retries, deadline=args.deadline, throttle=args.throttle,
    )
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        return int(args.run(ctx, args) or 0)
    except KeyboardInterrupt as exc:
        if ctx.debug:
            traceback.print_exc()
        message = str(exc) or "interrupted"
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)
        return int(getattr(exc, "exit_code", 128 + signal.SIGINT))
    except BrokenPipeError:
        # the reader went away (``dvid-store ls ... | head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        if ctx.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {describe_error(exc)}", file=sys.stderr, flush=True)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    raise SystemExit(main())
