"""``adamkit data list`` and ``adamkit data prepare [TASK|ARTEFACT ...]``."""
from __future__ import annotations

import argparse
import errno
import sys

from . import store


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", default=None,
                        help=f"cache directory (default ${store.ENV_VAR} or ~/.cache/adamkit/data)")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="show every artefact, its status, licence and source")
    p.add_argument("--verify", action="store_true", help="also check the sha256 of present files")
    p = sub.add_parser("prepare", help="fetch artefacts into the cache and verify their checksums")
    p.add_argument("targets", nargs="*", metavar="TASK",
                   help="task or artefact names (default: all); e.g. fmnist_cnn, shakespeare")
    p.add_argument("--force", action="store_true", help="fetch again even if present and valid")
    for p in sub.choices.values():  # accept --cache-dir after the action too
        p.add_argument("--cache-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    root = store.cache_dir(args.cache_dir)
    if args.data_command == "list":
        print(f"cache: {root}")
        for art in store.ARTEFACTS.values():
            state = store.status(art.name, root, check=args.verify)
            print(f"{art.name:16s} {state:8s} tasks: {', '.join(art.tasks)}")
            print(f"{'':16s} source:  {art.source}")
            print(f"{'':16s} licence: {art.licence}")
            if state in ("missing", "corrupt"):
                print(f"{'':16s} fetch:   {art.fetch_command()}")
        print(f"no data to prepare (packaged or generated): {', '.join(sorted(store.PACKAGE_DATA_TASKS))}")
        return 0
    names: list[str] = []
    try:
        for target in args.targets or ["all"]:
            names += [n for n in store.artefacts_for(target) if n not in names]
    except KeyError as err:
        print(f"adamkit data: {err.args[0]}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            store.prepare(name, root, force=args.force)
        except OSError as err:  # report every artefact (one line each), then fail
            reason = err.strerror or str(err)
            fix = ("free some space" if err.errno in (errno.ENOSPC, errno.EDQUOT)
                   else "give a writable --cache-dir (or $ADAMKIT_DATA_DIR)")
            where = f" {err.filename}" if err.filename else ""
            print(f"adamkit data: {name}: FAILED: cannot write{where}: {reason}; {fix}, then run the same "
                  f"command again" if err.filename or err.errno in (errno.EROFS, errno.EACCES, errno.ENOSPC)
                  else f"adamkit data: {name}: FAILED: {_one_line(err)}", file=sys.stderr)
            failed += 1
        except Exception as err:
            print(f"adamkit data: {name}: FAILED: {_one_line(err)}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
