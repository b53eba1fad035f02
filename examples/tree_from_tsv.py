"""Embed your own tree from a TSV file and use the result.

The file has one ``child<TAB>parent`` edge per line, optionally a third column with a title;
``#`` lines and blank lines are skipped (see examples/animals.tsv). This script reads it, embeds
it in ``--dim`` hyperbolic dimensions, prints the fidelity table, a few nearest-neighbour
queries and the Poincaré coordinates, and saves everything to ``--out``.

    python examples/tree_from_tsv.py                          # examples/animals.tsv
    python examples/tree_from_tsv.py my_tree.tsv --dim 5 --out runs/my-tree
    HYPERLOSS_QUICK=1 python examples/tree_from_tsv.py        # 2 epochs only

The same from the command line: ``hyperloss embed --tree my_tree.tsv --dim 5 --out DIR``, then
``hyperloss nearest DIR NAME -k 5``.
"""

import argparse
import os
from pathlib import Path

from hyperloss.construction import construct
from hyperloss.training import fit
from hyperloss.trees import Tree

QUICK = os.environ.get("HYPERLOSS_QUICK", "") not in ("", "0")
EXAMPLE_TSV = Path(__file__).with_name("animals.tsv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tsv", nargs="?", default=str(EXAMPLE_TSV), help="child<TAB>parent file")
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--out", default="runs/tree-from-tsv")
    args = parser.parse_args()

    tree = Tree.read_tsv(args.tsv)
    print(f"read {args.tsv}: {len(tree)} nodes, height {tree.height}, root {tree.root!r}")

    # The combinatorial construction alone is instant and already ranks neighbours well...
    constructed = construct(tree, args.dim)
    print(f"\nconstruction alone (tau = {constructed.metrics['tau']:.3f}):")
    print(constructed.evaluate(tree))

    # ...fit() starts from it and fine-tunes with the ranking losses.
    embedding = fit(tree, args.dim, seed=0, progress=not QUICK, **({"epochs": 2} if QUICK else {}))
    print("\nconstruction + fine-tuning:")
    print(embedding.evaluate(tree))

    leaves = [name for name in tree.names if not tree.children(name)]
    for name in leaves[:3]:
        neighbours = ", ".join(f"{n} ({d:.2f})" for n, d in embedding.nearest(name, k=4))
        print(f"nearest to {name}: {neighbours}")

    poincare = embedding.to_poincare()  # (N, dim) coordinates in the Poincaré ball
    print(
        f"\nPoincaré coordinates: shape {tuple(poincare.shape)}, max norm "
        f"{float(poincare.norm(dim=1).max()):.6f}"
    )

    embedding.save(args.out)
    embedding.plot(Path(args.out) / "embedding.png", tree)
    print(f"saved {args.out}/ (points.npy, embedding.json, embedding.png)")


if __name__ == "__main__":
    main()
