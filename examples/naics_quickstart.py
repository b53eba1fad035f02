"""Quick start: embed the NAICS 2022 industry tree in the hyperbolic plane.

Builds the tree (2,126 codes), fits a 2-D embedding with the library defaults (the
combinatorial construction, then ranking-loss fine-tuning), prints the fidelity table and the
nearest codes of "Custom Computer Programming Services", saves the embedding and draws it.

    python examples/naics_quickstart.py                 # writes runs/quickstart/
    python examples/naics_quickstart.py --dim 5 --out runs/quickstart-5d
    HYPERLOSS_QUICK=1 python examples/naics_quickstart.py   # sector 54 only, 2 epochs (seconds)

The same run from the command line: ``hyperloss embed naics --dim 2 --out runs/naics-2d``.
"""

import argparse
import os

from hyperloss.datasets import naics
from hyperloss.embedding import Embedding
from hyperloss.training import fit

QUICK = os.environ.get("HYPERLOSS_QUICK", "") not in ("", "0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--out", default="runs/quickstart")
    args = parser.parse_args()

    tree = naics()
    options = {}
    if QUICK:  # a small, fast version of the same steps
        tree = tree.subtree("54")
        options = {"epochs": 2}
    print(f"{tree.title(tree.root)}: {len(tree)} nodes, height {tree.height}")

    embedding = fit(tree, args.dim, seed=0, **options)
    print(embedding.evaluate(tree))

    code = "541511"
    print(f"\nnearest to {code} ({tree.title(code)}):")
    for name, distance in embedding.nearest(code, k=5):
        print(f"  {name:<8} {distance:7.3f}  {tree.title(name)}")

    embedding.save(args.out)
    picture = embedding.plot(os.path.join(args.out, "embedding.png"), tree)
    print(f"\nsaved {args.out}/ (points.npy, embedding.json) and {picture}")

    # A saved embedding loads back exactly, ready for look-ups in another program.
    again = Embedding.load(args.out)
    assert again.nearest(code, k=1) == embedding.nearest(code, k=1)


if __name__ == "__main__":
    main()
