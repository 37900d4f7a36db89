"""Shared entry-point plumbing for `python -m stages.<name>`: --help, params, logging, one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from emotion_circuits.errors import UserError
from emotion_circuits.params import Params, load_params
from emotion_circuits.runtime.process import Terminated, die_with_parent, stage_process


def run_stage(name: str, description: str, body: Callable[[Params, argparse.Namespace], None],
              argv: Sequence[str] | None = None) -> int:
    """Parse the common flags, run `body`, and turn user errors into one line on stderr + exit code 2."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="All knobs live in params.yaml; try variants with `dvc exp run -S key=value`.")
    parser.add_argument("--params", default="params.yaml", help="params file to read (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="disable progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s", stream=sys.stderr, force=True)
    try:
        with stage_process(name):  # one writer, SIGTERM like Ctrl-C, stale staging removed
            body(load_params(args.params), args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; no outputs were written", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM); no outputs were written", file=sys.stderr)
        return 143
    return 0


def main(name: str, description: str, body: Callable[[Params, argparse.Namespace], None]) -> None:
    die_with_parent()  # process-wide, so only here: killing `dvc` must not leave this stage writing as an orphan
    sys.exit(run_stage(name, description, body))
