"""The ``hyperloss`` command: embed a tree, evaluate an embedding, query nearest neighbours.

Usage::

    hyperloss embed naics --dim 2 --out runs/naics-2d      # the NAICS 2022 tree
    hyperloss embed icd10cm --dim 10 --out runs/icd-10d    # ICD-10-CM (98,5xx nodes)
    hyperloss embed --tree my_tree.tsv --dim 5 --out DIR   # any child<TAB>parent file
    hyperloss embed naics --encoder text --holdout 0.1 --dim 10 --out DIR  # unseen codes
    hyperloss evaluate DIR                                 # fidelity table of a saved run
    hyperloss nearest DIR 541511 -k 10                     # nearest names with titles

``embed`` writes into its output directory:

``points.npy``, ``embedding.json``
    The embedding (:meth:`hyperloss.embedding.Embedding.save`).
``metrics.json``
    The fidelity numbers (:meth:`hyperloss.metrics.FidelityReport.as_dict`) plus the wall time.
``run.json``
    Which tree was embedded (``"tree": "naics"`` or ``"tree": "tree.tsv"``, a copy of the input
    file kept in the directory) and the settings, so that ``evaluate`` and ``nearest`` work from
    the directory alone; ``world_size`` is the number of processes that trained it.

Under ``torchrun`` (``python -m torch.distributed.run --nproc-per-node 2 -m hyperloss embed
...``) every process trains its share (:mod:`hyperloss.distributed`) and rank 0 alone evaluates,
writes the files and prints.
``embedding.png``
    The Poincaré disk picture (:func:`hyperloss.plotting.plot_embedding`).
``holdout.json``
    With ``--holdout``: the JSON list of the held-out names.

``--encoder text`` trains a model of the node titles instead of free points: TF-IDF character
n-grams of the titles (:func:`hyperloss.encoders.text_features`; a ``--tree`` file has no
titles, so its names are the text), turned into votes for the most similar training titles
(:func:`hyperloss.encoders.neighbour_features`), into a linear
:class:`hyperloss.encoders.HyperbolicEncoder` (fit's encoder defaults). ``--encoder text-mlp``
trains the MLP ``HyperbolicEncoder(F, dim)`` on the TF-IDF vectors instead (Adam lr
``MLP_ENCODER_LR`` unless ``--lr``). ``--holdout F`` then holds out a
seeded fraction ``F`` of the non-root nodes (the root always trains): they take no part in
training (no anchor, positive, negative, idf weight or model selection), their points come from
their titles alone, and the command prints, next to the training nodes' figures, their NDCG@10
and per-anchor Spearman (each held-out node against all other nodes, the relevance of
:func:`hyperloss.metrics.ndcg_at_k`) and the same for ranking by TF-IDF cosine similarity of
the titles (the baseline), measured in the same run. Each anchor set is capped at
``HOLDOUT_ANCHORS`` (2,500) seeded anchors on large trees (the output says so).

Errors in the input (a missing file, a malformed TSV line, an unknown name, an output directory
that already exists without ``--force``, a checkpoint written with other settings, a bad flag
value) and errors of the environment (``OSError``: permissions, a full disk) print one line on
stderr and exit with status 1 (2 for command-line usage errors), without a traceback. Anything
else is a bug: it prints the traceback and a line asking to report it, and exits with status 70
(``EX_SOFTWARE``). Set the environment variable ``HYPERLOSS_DEBUG=1`` to have every error but a
usage error raise with its traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main", "build_parser", "CLIError", "DATASETS"]

PROG = "hyperloss"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
HOLDOUT_FILE = "holdout.json"
HOLDOUT_ANCHORS = 2500
# --encoder text-mlp: Adam's learning rate for the MLP (fit's encoder default, 0.1, is the
# linear neighbour encoder's; the evidence table in hyperloss.training).
MLP_ENCODER_LR = 1e-2
ENCODERS = ("text", "text-mlp")
PLOT_FILE = "embedding.png"
TREE_COPY = "tree.tsv"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): an internal software error
REPORT_TO = "the hyperloss issue tracker"


def _naics() -> Any:
    from hyperloss.datasets import naics

    return naics()


def _icd10cm() -> Any:
    from hyperloss.datasets import icd10cm

    return icd10cm()


#: Built-in trees by the name the command line accepts.
DATASETS: dict[str, Callable[[], Any]] = {"icd10cm": _icd10cm, "naics": _naics}


class CLIError(Exception):
    """An error in the user's input: printed as one line, exit status ``code``.

    Only the command's own checks raise it, and the few places that convert a library's input
    error (a ValueError about a file or name the user gave) into it; every other exception
    that reaches :func:`main` is an internal error.
    """

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success; 1 for an input or environment error (one line on stderr); 2 for a usage
        error; 70 for an internal error (traceback and where to report it on stderr); 130 when
        interrupted.

    Raises
    ------
    Exception
        Only with ``HYPERLOSS_DEBUG=1`` set: the error itself, with its traceback.
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.handler(args) or 0)
    except SystemExit as exit_:  # --help / --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except CLIError as error:
        if _debug() and error.code != EXIT_USAGE:
            raise
        return _fail(str(error), error.code)
    except BrokenPipeError:
        # Output piped into e.g. `head`, which exited: stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as error:
        # The environment, not the code: a file that cannot be read or written, a full disk.
        if _debug():
            raise
        return _fail(_os_message(error), EXIT_ERROR)
    except Exception:
        # Not an input error (those are CLIErrors by now): a bug. A ValueError from deep inside
        # the training must not pass for bad input, so it gets its traceback.
        if _debug():
            raise
        traceback.print_exc()
        print(
            f"{PROG}: internal error, please report it at {REPORT_TO} with the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hyperloss`` command (subcommands embed, evaluate, nearest)."""
    from hyperloss import __version__

    parser = _Parser(
        prog=PROG,
        description="Hyperbolic embeddings that respect a taxonomy.",
        epilog="Run 'hyperloss COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    embed = commands.add_parser(
        "embed",
        help="embed a tree and write the embedding, metrics and a picture",
        description=(
            "Embed a tree in hyperbolic space (Lorentz model), print the fidelity table and "
            "write points.npy, embedding.json, metrics.json, run.json and embedding.png into "
            "the output directory. Unset training options take the defaults of hyperloss.fit."
        ),
    )
    embed.add_argument(
        "dataset",
        nargs="?",
        choices=sorted(DATASETS),
        help=(
            "a built-in tree (naics: NAICS 2022, 2,126 nodes; icd10cm: ICD-10-CM, about 98,500 "
            "nodes); or use --tree"
        ),
    )
    embed.add_argument(
        "--tree",
        type=Path,
        metavar="TSV",
        help="a child<TAB>parent file ('#' comments and blank lines skipped)",
    )
    embed.add_argument(
        "--dim", type=_int_at_least(2), default=2, help="hyperbolic dimension (default: 2)"
    )
    embed.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output directory (default: runs/<tree>-<dim>d); must not exist unless --force",
    )
    embed.add_argument(
        "--epochs", type=_int_at_least(0), metavar="N", help="training epochs (default: fit's)"
    )
    embed.add_argument("--lr", type=_positive_float, help="learning rate (default: fit's)")
    embed.add_argument(
        "--batch-size", type=_int_at_least(1), metavar="N", help="anchors per step (default: fit's)"
    )
    embed.add_argument(
        "--seed", type=_int_at_least(0), metavar="N", help="random seed (default: 0)"
    )
    embed.add_argument(
        "--init",
        choices=("construct", "random"),
        help=(
            "start from the combinatorial construction (the default) or from random points "
            "near the origin"
        ),
    )
    embed.add_argument(
        "--curvature",
        type=_positive_float,
        help="c > 0: the space has sectional curvature -c (default: 1)",
    )
    embed.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="save training state to FILE and resume from it if it exists",
    )
    embed.add_argument(
        "--encoder",
        choices=ENCODERS,
        help=(
            "train a model of the node titles instead of free points; it can embed nodes it "
            "never saw (text: a linear encoder on votes for the training titles most similar "
            "in TF-IDF character n-grams; text-mlp: an MLP on the TF-IDF vectors)"
        ),
    )
    embed.add_argument(
        "--holdout",
        type=_fraction,
        metavar="F",
        help=(
            "with --encoder: hold out a seeded fraction F in (0, 1) of the non-root nodes from "
            "training, embed them from their text alone, write holdout.json and print held-out "
            "metrics next to the training ones"
        ),
    )
    embed.add_argument("--no-progress", action="store_true", help="no progress bar")
    embed.add_argument("--no-plot", action="store_true", help="do not draw embedding.png")
    embed.add_argument(
        "--force", action="store_true", help="write into the output directory even if it exists"
    )
    embed.set_defaults(handler=_embed)

    evaluate = commands.add_parser(
        "evaluate",
        help="print the fidelity table of a saved embedding",
        description="Score a saved embedding against the tree it was trained on.",
    )
    evaluate.add_argument("directory", type=Path, metavar="DIR", help="an 'embed' output")
    _add_tree_override(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.set_defaults(handler=_evaluate)

    nearest = commands.add_parser(
        "nearest",
        help="print the nearest names of a saved embedding",
        description="Print the k names closest to NAME, with titles and geodesic distances.",
    )
    nearest.add_argument("directory", type=Path, metavar="DIR", help="an 'embed' output")
    nearest.add_argument("name", metavar="NAME", help="a node name, e.g. a NAICS code")
    nearest.add_argument(
        "-k", type=_int_at_least(1), default=10, help="number of neighbours (default: 10)"
    )
    _add_tree_override(nearest)
    nearest.set_defaults(handler=_nearest)
    return parser


# ----------------------------------------------------------------------------------------------
# subcommands


def _embed(args: argparse.Namespace) -> int:
    if (args.dataset is None) == (args.tree is None):
        raise CLIError(
            "give either a built-in tree (naics, icd10cm) or --tree FILE, not both", EXIT_USAGE
        )
    if args.checkpoint is not None and args.checkpoint.is_dir():
        raise CLIError(f"--checkpoint {str(args.checkpoint)!r} is a directory; give a file name")
    if args.holdout is not None and args.encoder is None:
        raise CLIError(
            "--holdout needs --encoder (free points cannot place a node that never trained)",
            EXIT_USAGE,
        )
    label = args.dataset if args.dataset is not None else args.tree.stem
    out = args.out if args.out is not None else Path("runs") / f"{label}-{args.dim}d"
    _prepare_output(out, force=args.force)

    tree = _load_tree(args.dataset, args.tree)
    if len(tree.names) < 2:
        raise CLIError(f"the tree has {len(tree.names)} node; need at least 2 to embed")

    options = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "init": args.init,
        "curvature": args.curvature,
        "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
    }
    options = {key: value for key, value in options.items() if value is not None}
    recorded = dict(options)
    split = None
    text = None
    if args.encoder is not None:
        split, text = _encoder_options(tree, args, options)
        recorded.update(encoder=args.encoder, holdout=args.holdout)
    start = time.perf_counter()
    embedding = _fit(tree, args.dim, progress=not args.no_progress, options=options)
    fit_seconds = time.perf_counter() - start
    ranks = _rank_info()
    if not ranks.is_zero:  # under torchrun: rank 0 alone evaluates, writes and prints
        return 0
    report = embedding.evaluate(tree)
    metrics = dict(report.as_dict())
    metrics["wall_time_s"] = round(fit_seconds, 3)
    holdout_lines: list[str] = []
    if split is not None and split[1] is not None:
        metrics["holdout"], holdout_lines = _holdout_metrics(
            embedding, tree, text, split, seed=args.seed or 0
        )
    embedding.metrics = metrics

    _clear_earlier_run(out, keep_tree_copy=args.tree is not None)
    out.mkdir(parents=True, exist_ok=True)
    if args.tree is not None:
        copy = out / TREE_COPY
        if not (copy.exists() and copy.samefile(args.tree)):
            shutil.copyfile(args.tree, copy)
    embedding.save(out)
    _write_json(out / METRICS_FILE, metrics)
    run = {
        "tree": args.dataset if args.dataset is not None else TREE_COPY,
        "source": str(args.tree) if args.tree is not None else args.dataset,
        "n_nodes": len(tree.names),
        "dim": args.dim,
        "options": recorded,
        "world_size": ranks.world_size,
        "wall_time_s": round(fit_seconds, 3),
        "hyperloss_version": _version(),
    }
    _write_json(out / RUN_FILE, run)
    written = ["points.npy", "embedding.json", METRICS_FILE, RUN_FILE]
    if args.tree is not None:
        written.append(TREE_COPY)
    if split is not None and split[1] is not None:
        _write_json(out / HOLDOUT_FILE, [tree.names[i] for i in split[1].tolist()])
        written.append(HOLDOUT_FILE)
    if not args.no_plot:
        embedding.plot(out / PLOT_FILE, tree)
        written.append(PLOT_FILE)

    print(
        f"embedded {run['source']} ({len(tree.names)} nodes) in dim {args.dim} "
        f"in {fit_seconds:.1f} s"
    )
    print(report)
    for line in holdout_lines:
        print(line)
    print(f"wrote {out}/: {', '.join(written)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    embedding = _load_embedding(args.directory)
    tree = _tree_for(args)
    if tree is None:
        raise CLIError(
            f"{str(args.directory)!r} does not say which tree was embedded (no {RUN_FILE}); "
            "give --tree FILE or --dataset naics|icd10cm"
        )
    try:
        embedding.points_for(tree)  # its one ValueError: the names differ from the tree's
    except ValueError as error:
        raise CLIError(f"{args.directory}: {error}") from error
    report = embedding.evaluate(tree)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(f"{args.directory}: {len(embedding.names)} points, dim {embedding.dim}")
        print(report)
    return 0


def _nearest(args: argparse.Namespace) -> int:
    embedding = _load_embedding(args.directory)
    name = args.name
    if name not in embedding.index:
        close = difflib.get_close_matches(name, embedding.names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CLIError(f"unknown name {name!r}: not in the embedding in {args.directory}{hint}")
    tree = _tree_for(args)
    neighbours = embedding.nearest(name, k=args.k)

    def title(node: str) -> str:
        return tree.title(node) if tree is not None and node in tree else ""

    width = max(len("name"), *(len(node) for node, _ in neighbours))
    print(f"nearest to {name}" + (f"  {title(name)}" if title(name) else ""))
    print(f"{'rank':>4}  {'name':<{width}}  {'distance':>9}  title")
    for rank, (node, distance) in enumerate(neighbours, start=1):
        print(f"{rank:>4}  {node:<{width}}  {distance:>9.4f}  {title(node)}".rstrip())
    return 0


# ----------------------------------------------------------------------------------------------
# helpers


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one-line CLIErrors instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


def _fail(message: str, code: int) -> int:
    # One line, however the underlying message was formatted.
    text = " ".join(str(message).split())
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return code


def _debug() -> bool:
    return os.environ.get("HYPERLOSS_DEBUG", "") not in ("", "0")


def _os_message(error: OSError) -> str:
    if error.filename is not None and error.strerror:
        return f"{error.strerror.lower()}: {str(error.filename)!r}"
    return str(error)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _add_tree_override(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--tree", type=Path, metavar="TSV", help=f"the tree file (default: from DIR/{RUN_FILE})"
    )
    group.add_argument(
        "--dataset", choices=sorted(DATASETS), help="a built-in tree instead of DIR's record"
    )


def _prepare_output(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CLIError(f"output path {str(out)!r} exists and is not a directory")
    if out.exists() and not force:
        raise CLIError(f"output directory {str(out)!r} already exists (use --force to overwrite)")
    # Fail before training, not after it, when the directory cannot be created at all.
    existing = next(parent for parent in out.absolute().parents if parent.exists())
    if not out.exists() and not existing.is_dir():
        raise CLIError(f"cannot create output directory {str(out)!r}: {str(existing)!r} is a file")


def _clear_earlier_run(out: Path, *, keep_tree_copy: bool) -> None:
    """Remove our own files of an earlier run in ``out`` so none goes stale; others stay."""
    names = [RUN_FILE, METRICS_FILE, PLOT_FILE, "points.npy", "embedding.json"]
    if not keep_tree_copy:  # e.g. a tree.tsv left by a TSV run when this run embeds NAICS
        names.append(TREE_COPY)
    for name in names:
        if (out / name).is_file():
            (out / name).unlink()


def _encoder_options(
    tree: Any, args: argparse.Namespace, options: dict[str, Any]
) -> tuple[Any, Any]:
    """Add the encoder, its features, the training nodes and the encoder's training settings
    to ``options``; return the split ``(train, held_out)`` (``held_out`` None without
    --holdout) and the TF-IDF title vectors (the baseline's)."""
    if args.init is not None:
        raise CLIError("--init does not apply with --encoder (the encoder's output is the start)")
    from hyperloss.encoders import (
        HyperbolicEncoder,
        holdout_split,
        neighbour_features,
        text_features,
    )

    train, held = None, None
    if args.holdout is not None:
        try:
            train, held = holdout_split(len(tree.names), args.holdout, seed=args.seed or 0)
        except ValueError as error:
            raise CLIError(f"--holdout: {error}") from error
        options["train_nodes"] = train
    titles = [tree.title(name) for name in tree.names]
    text = text_features(titles, fit_on=train)
    if args.encoder == "text":
        # Votes for the most similar training titles, and a linear map of them: each training
        # node learns a vector, an unseen node takes its neighbours' (hyperloss.encoders).
        features, hidden = neighbour_features(text, train), ()
    else:
        features, hidden = text, (256,)
        options.setdefault("lr", MLP_ENCODER_LR)
    options["features"] = features
    options["encoder"] = HyperbolicEncoder(
        features.shape[1],
        args.dim,
        hidden=hidden,
        curvature=args.curvature or 1.0,
        seed=args.seed or 0,
    )
    return (train, held), text


def _holdout_metrics(
    embedding: Any, tree: Any, features: Any, split: Any, *, seed: int
) -> tuple[dict[str, Any], list[str]]:
    """Held-out vs training NDCG@10 and Spearman, and the TF-IDF cosine baseline."""
    import numpy as np

    from hyperloss.metrics import evaluate_anchors

    generator = np.random.default_rng(seed)
    sets = {}
    for label, index in (("training", split[0]), ("held-out", split[1])):
        anchors = index.numpy()
        if anchors.size > HOLDOUT_ANCHORS:
            anchors = np.sort(generator.choice(anchors, HOLDOUT_ANCHORS, replace=False))
        sets[label] = (anchors, int(index.numel()))
    result: dict[str, Any] = {}
    rows = []
    for label, (anchors, total) in sets.items():
        scores = evaluate_anchors(embedding, tree, anchors=anchors)
        baseline = _tfidf_baseline(features, tree, anchors)
        result[label] = {
            "n_nodes": total,
            "n_anchors": int(anchors.size),
            "ndcg@10": scores["ndcg@10"],
            "spearman": scores["spearman"],
            "tfidf_ndcg@10": baseline["ndcg@10"],
            "tfidf_spearman": baseline["spearman"],
        }
        rows.append((label, result[label]))
    lines = [
        "held-out generalisation (each anchor ranks all other nodes; NDCG@10 with the relevance "
        "of hyperloss.metrics.ndcg_at_k, per-anchor Spearman):",
        f"  {'anchors':<24}{'nodes':>7}  {'NDCG@10':>8}  {'Spearman':>8}   "
        f"{'TF-IDF NDCG@10':>14}  {'TF-IDF Spearman':>15}",
    ]
    for label, row in rows:
        sampled = "" if row["n_anchors"] == row["n_nodes"] else f" ({row['n_anchors']} sampled)"
        lines.append(
            f"  {label + ' nodes' + sampled:<24}{row['n_nodes']:>7}  {row['ndcg@10']:>8.4f}  "
            f"{row['spearman']:>8.4f}   {row['tfidf_ndcg@10']:>14.4f}  "
            f"{row['tfidf_spearman']:>15.4f}"
        )
    lines.append(
        "  (TF-IDF: ranking by cosine similarity of the title vectors the encoder's features "
        "come from)"
    )
    return result, lines


def _tfidf_baseline(features: Any, tree: Any, anchors: Any) -> dict[str, float]:
    """Mean NDCG@10 and Spearman of ranking every node by TF-IDF cosine (rows: unit norm)."""

    from hyperloss.metrics import anchor_scores

    ndcg, spearman = [], []
    block = max(1, 2_000_000 // max(1, features.shape[0]))
    for start in range(0, anchors.size, block):
        part = anchors[start : start + block]
        similarity = (features[part] @ features.T).toarray()
        scores = anchor_scores(1.0 - similarity, tree, part, k=10)
        ndcg.append(scores["ndcg@10"])
        spearman.append(scores["spearman"])
    return {"ndcg@10": _defined_mean(ndcg), "spearman": _defined_mean(spearman)}


def _defined_mean(parts: list[Any]) -> float:
    """Mean over the anchors where the figure is defined (nan when none is)."""
    import numpy as np

    values = np.concatenate(parts)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _fit(tree: Any, dim: int, *, progress: bool, options: dict[str, Any]) -> Any:
    """hyperloss.fit, with the errors about an existing checkpoint as input errors."""
    from hyperloss.training import fit

    checkpoint = options.get("checkpoint")
    resuming = checkpoint is not None and Path(checkpoint).is_file()
    try:
        return fit(tree, dim, progress=progress, **options)
    except ValueError as error:
        # The command checks every other argument before; the one input only fit can check is
        # an existing checkpoint (unreadable, not a checkpoint, written with other settings),
        # and those errors name the file. Any other ValueError from fit is a bug.
        if resuming and str(Path(checkpoint)) in str(error):
            raise CLIError(str(error)) from error
        raise


def _rank_info() -> Any:
    """This process's place in a torchrun run (rank 0 of 1 when run plainly)."""
    from hyperloss.distributed import rank_info

    return rank_info()


def _load_tree(dataset: str | None, tsv: Path | None) -> Any:
    if dataset is not None:
        return DATASETS[dataset]()
    assert tsv is not None
    if not tsv.exists():
        raise CLIError(f"tree file {str(tsv)!r} does not exist")
    if not tsv.is_file():
        raise CLIError(f"tree file {str(tsv)!r} is not a file")
    from hyperloss.trees import Tree

    try:
        return Tree.read_tsv(tsv)
    except (ValueError, UnicodeDecodeError) as error:
        message = str(error)
        # read_tsv names the file and line for malformed lines; add the file where it did not.
        if os.fspath(tsv) not in message:
            message = f"{tsv}: {message}"
        raise CLIError(message) from error


def _load_embedding(directory: Path) -> Any:
    if not directory.exists():
        raise CLIError(f"directory {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise CLIError(f"{str(directory)!r} is not a directory")
    from hyperloss.embedding import Embedding

    try:
        return Embedding.load(directory)
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(str(error)) from error


def _tree_for(args: argparse.Namespace) -> Any | None:
    """The tree named by --tree/--dataset, else the one recorded in DIR/run.json, else None."""
    if args.tree is not None or args.dataset is not None:
        return _load_tree(args.dataset, args.tree)
    record_path = args.directory / RUN_FILE
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        entry = record["tree"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise CLIError(f"{str(record_path)!r} is unreadable: {error}") from error
    if not isinstance(entry, str) or not entry:
        raise CLIError(
            f"{str(record_path)!r} is unreadable: 'tree' must be a dataset or a file name, "
            f"got {entry!r}"
        )
    if entry in DATASETS:
        return DATASETS[entry]()
    return _load_tree(None, args.directory / entry)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _version() -> str:
    from hyperloss import __version__

    return __version__
