"""Command line: `recmaml SUBCOMMAND ...`. Each subcommand parses its flags and calls library functions;
this package and recmaml.quickstart are the only places that print or show progress bars.

One module per family of commands, each declaring its subparsers beside the cmd_ functions that read them:
recmaml.cli.training (fit, tune), .serving (recommend, spark-recommend, predict), .evaluation (evaluate,
benchmark) and .quickstart; the flags several commands share are declared once in recmaml.cli.flags (where
--k's one meaning, a list length, is written down), the helpers they share live in recmaml.cli.common.
This module builds the parser and runs a command.

Exit codes: 0 success; 2 usage, config or data errors (one line, no traceback); 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from recmaml import __version__
from recmaml.cli import evaluation, quickstart, service, serving, similar, training
from recmaml.cli.common import MODEL_COLUMNS, Terminated, log, resolve_columns
from recmaml.cli.flags import FORMER_SPELLINGS, add_quiet, fill_late_help
from recmaml.errors import RecMamlError, cli_surface, cut

# the commands in the order `recmaml --help` lists them
COMMANDS = (training.add_fit, serving.add_recommend, serving.add_spark_recommend, serving.add_predict, service.add_serve,
            similar.add_similar,
            evaluation.add_evaluate, training.add_tune, evaluation.add_benchmark, quickstart.add_quickstart)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the flag and the problem, then where the usage is (argparse's
    own error prints the whole usage first, which buries the line that matters in a batch job's log)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")

    def format_help(self):
        fill_late_help(self)  # help that needs a heavy import (recmaml.cli.flags.help_when_shown)
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recmaml", description="Meta-learned cold-start recommendation: adapt to each new user's few "
        "interactions, then rank.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `recmaml COMMAND --help` for a command's flags and an example")
    parser.add_argument("--version", action="version", version=f"recmaml {__version__}")
    add_quiet(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # signal handlers live on the main thread
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    except Terminated:  # also when it lands before the command's own handlers (while parsing, importing)
        print("recmaml: terminated (SIGTERM); partial outputs were removed", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


def _note_former_spellings(args) -> None:
    for (command, old), new in FORMER_SPELLINGS.items():
        if args.command == command and any(a == old or a.startswith(old + "=") for a in args.argv):
            log.warning("note: `recmaml %s %s` is spelled %s now (%s still works)%s", command, old, new, old,
                        "; elsewhere --k is a list length" if old == "--k" else "")


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by `benchmark` to reproduce a run
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr, force=True)
    # a warning is one line, like the errors (the library's warnings carry their own explanation)
    warnings.showwarning = lambda message, category, *_rest, **_kw: log.warning("warning: %s", cut(str(message)))
    _note_former_spellings(args)
    try:
        with cli_surface():  # the library's messages give flags, not Python keywords
            if args.command not in MODEL_COLUMNS:
                resolve_columns(args)
            args.func(args)
    except (RecMamlError, OSError) as err:  # OSError: a folder that cannot be written, a full disk: the user's to fix
        print(f"recmaml {args.command}: error: {cut(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"recmaml {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: keep the traceback for the report
        import traceback

        traceback.print_exc()
        print(f"recmaml {args.command}: unexpected error (exit 1); please report it with the traceback above",
              file=sys.stderr)
        return 1
    return 0
