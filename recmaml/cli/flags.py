"""The flags several commands share, each declared once here: the column flags of every input (one
group), --quiet, the --model / --device / --threads a command that loads a model takes, training's
--threads, and --k, --out, --history, --config, --user-features, --history-kind, --allow-unknown-items.
A command module (recmaml.cli.training, .serving, .evaluation, .quickstart) declares its subparser with
`add_command` and its own flags beside its cmd_ function.

--k is a list length, and only that: `recommend --k` and `spark-recommend --k` write lists of k items,
and `evaluate --k` scores the same top-k lists (heldout.evaluate_users ranks k items per user and
cuts its metrics there), so its cut-off is that length. A support size, which --k once also named, is
--support-size (tune) and --support-sizes (benchmark); there --k still works, with a note
(FORMER_SPELLINGS)."""

from __future__ import annotations

import argparse
from typing import Callable

REMEMBERED = "; with --model: the name the model was fitted with"

LIST_LENGTH = 20  # --k's default

# (command, former spelling): its spelling now. Each alias is declared with its flag (recmaml.cli.training,
# recmaml.cli.evaluation); recmaml.cli.main notes a former spelling used.
FORMER_SPELLINGS = {("benchmark", "--k"): "--support-sizes", ("tune", "--k"): "--support-size",  # --k: a list length
                    ("evaluate", "--threshold"): "--relevance-threshold",  # one name for one threshold
                    ("benchmark", "--relevant-min"): "--relevance-threshold"}

HISTORY_KIND_HELP = ("what the users' rows are: 'first' (their earliest interactions, as a new user shows them) "
                     "or 'sample' (a random sample of them)")
MODEL_HISTORY_KIND = "the model's serve.history_kind, 'first' for a model fitted on a log with timestamps"


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("input columns (of every input file) and the log's format")
    group.add_argument("--format", help="format of --data / --history / --heldout: csv, tsv, parquet, jsonl, sql, "
                       "movielens-100k, movielens-1m, movielens-latest, filmtrust, ciaodvd, lastfm; inferred from the "
                       "extension or folder by default")
    group.add_argument("--user-col", default=None, help=f"user id column (default: user_id{REMEMBERED})")
    group.add_argument("--item-col", default=None, help=f"item id column (default: item_id{REMEMBERED})")
    group.add_argument("--rating-col", default=None, help="rating column (default: rating, optional; "
                       f"{REMEMBERED[2:]}); '' reads implicit feedback")
    group.add_argument("--timestamp-col", default=None,
                       help=f"timestamp column (default: timestamp, optional{REMEMBERED})")
    group.add_argument("--decimal", choices=[".", ","], default=".", help="decimal mark of the ratings (default "
                       "'.'; ',' reads the 3,5 of a European spreadsheet as 3.5)")
    group.add_argument("--data-table", help="table to read when --data / --history / --heldout is an SQL URI")
    group.add_argument("--delimiter", default=None, help="field separator of CSV/TSV inputs (default: detected "
                       "from the header line: comma, semicolon, tab or pipe)")
    group.add_argument("--encoding", default="utf8", help="text encoding of CSV/TSV/JSON Lines inputs (default utf8; "
                       "e.g. latin-1, or utf8-lossy to replace undecodable bytes)")


def whole_or_auto(text: str) -> int | str:
    """--threads ('auto': the cores no other process is running on) and fit's --epochs ('auto': from the
    log's size): a whole number >= 1, or 'auto'."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number >= 1 or 'auto'")
    return value


threads_arg = whole_or_auto


def add_training_threads(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument("--threads", type=threads_arg, default=None,
                        help="torch threads while meta-training, a number or 'auto': the cores no other process "
                        "is running on when training starts (default: the config's meta.threads, 'auto' unless "
                        "set); fewer threads than cores can be much faster beside another CPU-bound job." + more)


def add_quiet(parser: argparse.ArgumentParser, top: bool = False) -> None:
    # accepted before and after the command; SUPPRESS keeps a subcommand from resetting the top-level flag
    parser.add_argument("--quiet", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="no progress bars or notes, only errors")


def add_command(sub, name: str, help: str, example: str, uses_model: bool = True, device: bool = True):
    """The subparser of one command, with the flags every command takes: --quiet; --model when it loads a
    model; --device unless device=False; --threads (scoring's) when it loads a model and takes --device."""
    p = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_quiet(p)
    if uses_model:
        p.add_argument("--model", required=True, help="model directory written by `recmaml fit`")
    if device:
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: the config's "
                       "meta.device when training, cpu when serving)")
    if uses_model and device:
        p.add_argument("--threads", type=threads_arg, default=None, help="torch threads while scoring, a "
                       "number or 'auto': the cores no other process is running on (default: the model's "
                       "serve.threads, 'auto' unless set)")
    return p


def add_list_length(parser: argparse.ArgumentParser, more: str = "") -> None:
    """--k, the length of each user's ranked list (see the module's docstring); `more` says what else
    follows from it in this command."""
    parser.add_argument("--k", type=int, default=LIST_LENGTH, help=f"list length (default {LIST_LENGTH}){more}")


def add_out(parser: argparse.ArgumentParser, help: str, required: bool = True, default: str | None = None) -> None:
    """--out: what the command writes (a file, a folder or an SQL URI: the help says which)."""
    parser.add_argument("--out", required=required, default=default, help=help)


def add_history(parser: argparse.ArgumentParser, help: str) -> None:
    """--history: the rows of the users a command adapts to."""
    parser.add_argument("--history", required=True, help=help)


def add_config(parser: argparse.ArgumentParser, help: str) -> None:
    """--config: a TOML config, a path or a shipped config by name (recmaml.config.load_config)."""
    parser.add_argument("--config", help=help)


def add_history_kind(parser: argparse.ArgumentParser, default: str = MODEL_HISTORY_KIND, more: str = "") -> None:
    """--history-kind; `default` says what the command uses without it, `more` adds to the help."""
    parser.add_argument("--history-kind", choices=["first", "sample"], default=None,
                        help=f"{HISTORY_KIND_HELP}; default: {default}{more}")


def add_user_features(parser: argparse.ArgumentParser, whose: str) -> None:
    """--user-features of `whose` users ("the users'", "the cold users'", "user")."""
    parser.add_argument("--user-features", help=f"table of {whose} side features keyed by --user-col")


def add_keep_column_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-column-names", action="store_true", help="write the user and item columns "
                        "under the input's names (--user-col, --item-col, or the model's) instead of user_id, "
                        "item_id")


def add_allow_unknown_items(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-unknown-items", action="store_true", help="accept a history whose rows (all or "
                        "most) name items the model does not know (otherwise an error, or a warning when most do)")


def help_when_shown(action: argparse.Action, make_help: Callable[[], str]) -> None:
    """Give `action` the help `make_help()` writes, when a help page is printed (recmaml.cli's parser calls
    fill_late_help first): for help that needs a heavy import, which building the parser must not pay."""
    action.make_help = make_help


def fill_late_help(parser: argparse.ArgumentParser) -> None:
    """Write the help of the actions that help_when_shown deferred, once."""
    for action in parser._actions:
        make_help = getattr(action, "make_help", None)
        if make_help is not None:
            action.help, action.make_help = make_help(), None
