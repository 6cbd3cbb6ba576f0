"""`recmaml serve`: the HTTP service (recmaml.service does the work; this module its flags)."""

from __future__ import annotations

from recmaml.cli.flags import add_command, add_history_kind, threads_arg
from recmaml.errors import RecMamlError


def add_serve(sub) -> None:
    sv = add_command(sub, "serve", "answer new users' ranked lists over HTTP: POST /recommend, /predict; GET "
                     "/health, /model; POST /reload (schema at /docs)", "recmaml serve --model runs/ml100k --port 8000\n"
                     "  curl -s localhost:8000/recommend -H 'content-type: application/json' "
                     "-d '{\"users\": [{\"items\": [50, 172, 181]}], \"k\": 5}'", device=False)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                    "only; 0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    sv.add_argument("--max-batch-users", type=int, default=256, help="users of concurrent requests adapted in "
                    "one batched computation, at most (default 256)")
    sv.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch may wait for requests "
                    "already arriving (default 2; never when no other request is in flight)")
    sv.add_argument("--threads", type=threads_arg, default=None, help="torch threads while scoring, a number or "
                    "'auto': the cores no other process is running on (default: the model's serve.threads)")
    add_history_kind(sv, "; a request's \"history_kind\" still wins")
    sv.set_defaults(func=cmd_serve)


def cmd_serve(args) -> None:
    if not 0 <= args.port <= 65535:
        raise RecMamlError(f"--port {args.port}: give a TCP port between 1 and 65535 (0: any free port)")
    if args.max_batch_users < 1:
        raise RecMamlError(f"--max-batch-users {args.max_batch_users}: give at least 1")
    if not 0 <= args.max_wait_ms <= 1000:
        raise RecMamlError(f"--max-wait-ms {args.max_wait_ms}: give 0 to 1000 milliseconds")
    try:
        from recmaml import service
    except ImportError as err:
        raise RecMamlError(f"recmaml serve needs the `serve` extra ({err.name} is missing): "
                           "pip install 'recmaml[serve]'") from err
    service.run(args.model, host=args.host, port=args.port, max_users=args.max_batch_users,
                max_wait_ms=args.max_wait_ms, threads=args.threads, log_level="warning" if args.quiet else "info",
                history_kind=args.history_kind)
