"""`recmaml quickstart`: the whole path on MovieLens-100K in one command (recmaml.quickstart does the work;
this module its flags, its progress bar and what it prints)."""

from __future__ import annotations

from pathlib import Path

from recmaml.cli.common import LazyBar, checked_device, with_training_threads
from recmaml.cli.flags import add_command, add_out, add_training_threads
from recmaml.errors import RecMamlError


def add_quickstart(sub) -> None:
    qs = add_command(sub, "quickstart",
                     "meta-train on MovieLens-100K, score held-out cold users, compare with baselines",
                     "recmaml quickstart --out runs/quickstart", uses_model=False)
    qs.add_argument("--data", help="MovieLens-100K folder (else $RECMAML_DATA, a local copy, a download, "
                    "or built-in synthetic data)")
    add_out(qs, "folder for the model, ranked lists and metrics", required=False, default="runs/quickstart")
    qs.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    qs.add_argument("--no-download", action="store_true", help="never try the network")
    add_training_threads(qs, " The baselines' fits use the same count.")
    qs.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args) -> None:
    from recmaml import quickstart

    device = checked_device(args) if args.device else None
    if Path(args.out).exists() and not Path(args.out).is_dir():  # found now, not after the training
        raise RecMamlError(f"--out {args.out}: a file has this name, and --out names the folder the quickstart "
                           "writes; remove the file or choose another name")
    data = quickstart.find_data(args.data, allow_download=not args.no_download)
    config, source = quickstart.default_config()
    config = with_training_threads(config, args)
    if device:
        config = config.replace(meta={"device": device})
    config = (config, source)
    with LazyBar(args, total=config[0].meta.epochs, unit="epoch", desc="meta-training") as bar:
        summary = quickstart.run(Path(args.out), data, config=config, seed=args.seed, progress=bar)
    print(quickstart.format_table(summary))
    print(f"model: {summary['model']}\nranked lists of {summary['cold_users']} cold users: {summary['ranked']}")
    from recmaml.files import write_json

    write_json(Path(args.out) / "metrics.json", summary)
