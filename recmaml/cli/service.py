"""`recmaml serve`: the HTTP service (recmaml.service does the work; this module its flags)."""

from __future__ import annotations

import os
from pathlib import Path

from recmaml.cli.common import checked_device, log
from recmaml.cli.flags import add_command, add_history_kind
from recmaml.errors import RecMamlError, install_extra

TOKEN_ENV = "RECMAML_RELOAD_TOKEN"  # recmaml.service.RELOAD_TOKEN_ENV; named here too: the extra may be missing


def add_serve(sub) -> None:
    sv = add_command(sub, "serve", "answer new users' ranked lists over HTTP: POST /recommend, /predict; GET "
                     "/health, /model; POST /reload (schema at /docs)", "recmaml serve --model runs/ml100k --port 8000\n"
                     "  curl -s localhost:8000/recommend -H 'content-type: application/json' "
                     "-d '{\"users\": [{\"items\": [50, 172, 181]}], \"k\": 5}'")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                    "only; 0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    sv.add_argument("--max-batch-users", type=int, default=256, help="users of concurrent requests adapted in "
                    "one batched computation, at most (default 256)")
    sv.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch may wait for requests "
                    "already arriving (default 2; never when no other request is in flight)")
    sv.add_argument("--max-queue-ms", type=float, default=500.0, help="past this much queued work (the users "
                    "waiting, at the rate recent batches ran) a /recommend request gets 503 with Retry-After at "
                    "once instead of waiting out its client (default 500; 0: never refuse)")
    sv.add_argument("--reload-token", default=None, help=f"the secret that turns POST /reload on (clients send "
                    f"Authorization: Bearer <it>); prefer the environment variable {TOKEN_ENV}, as a flag shows "
                    "in `ps` (default: that variable; unset: POST /reload is off, SIGHUP still reloads)")
    sv.add_argument("--reload-root", default=None, help="the folder whose model directories POST /reload may "
                    "take up, named relative to it (default: the served model directory itself)")
    sv.add_argument("--workers", type=int, default=1, help="processes answering on the port, each with its own "
                    "copy of the model and one torch thread unless --threads says otherwise (default 1; on this 2-core "
                    "machine 2 answered 1.4 x one's users/s at 64 connections); SIGHUP to the main "
                    "process replaces them one by one with the served directory reloaded")
    add_history_kind(sv, more="; a request's \"history_kind\" still wins")
    sv.set_defaults(func=cmd_serve)


def cmd_serve(args) -> None:
    if not 0 <= args.port <= 65535:
        raise RecMamlError(f"--port {args.port}: give a TCP port between 1 and 65535 (0: any free port)")
    if args.max_batch_users < 1:
        raise RecMamlError(f"--max-batch-users {args.max_batch_users}: give at least 1")
    if not 0 <= args.max_wait_ms <= 1000:
        raise RecMamlError(f"--max-wait-ms {args.max_wait_ms}: give 0 to 1000 milliseconds")
    if not 0 <= args.max_queue_ms <= 60_000:
        raise RecMamlError(f"--max-queue-ms {args.max_queue_ms}: give 0 (never refuse) to 60000 milliseconds")
    if args.workers < 1:
        raise RecMamlError(f"--workers {args.workers}: give at least 1")
    if args.reload_root is not None and not Path(args.reload_root).is_dir():
        raise RecMamlError(f"--reload-root {args.reload_root}: no such folder; name the folder that holds the "
                           "model directories POST /reload may take up")
    device = checked_device(args) if args.device else "cpu"  # an absent GPU fails here, before any loading
    try:
        from recmaml import service
    except ImportError as err:
        raise RecMamlError(f"recmaml serve needs the `serve` extra ({err.name} is missing): "
                           f"{install_extra('serve')}") from err
    token = _reload_token(args, service.reload_token_problem)
    if token is None and args.reload_root is not None:
        log.warning("note: --reload-root is unused while POST /reload is off (set %s to turn it on)", TOKEN_ENV)
    service.run(args.model, host=args.host, port=args.port, max_users=args.max_batch_users,
                max_wait_ms=args.max_wait_ms, threads=args.threads, log_level="warning" if args.quiet else "info",
                device=device, reload_token=token, reload_root=args.reload_root, access=not args.quiet,
                history_kind=args.history_kind, max_queue_ms=args.max_queue_ms, workers=args.workers)


def _reload_token(args, problem_of) -> str | None:
    """--reload-token, else $RECMAML_RELOAD_TOKEN, checked (problem_of: recmaml.service.reload_token_problem);
    None when neither is set: POST /reload is off."""
    flag = args.reload_token is not None
    token = args.reload_token if flag else os.environ.get(TOKEN_ENV)
    if token is None:
        return None
    problem = problem_of(token)
    if problem:
        raise RecMamlError(f"{'--reload-token' if flag else TOKEN_ENV}: {problem}")
    return token
