"""Rooted trees (taxonomies) as index tensors: the ground truth that embeddings are judged against.

A :class:`Tree` turns node names into integer indices once. Everything downstream (metrics,
losses, sampling) works on its tensors: ``parent``, ``depth``, ``branch``, ``levels``, tree
distances of index pairs on demand (:meth:`Tree.distance`, :meth:`Tree.lca_index`: binary
lifting, nothing N x N), and rows of the distance / ancestor matrices for chosen anchors
(:meth:`Tree.distances`, :meth:`Tree.closure` with ``rows=...``).

Index order
-----------
Breadth first: the root is index 0, nodes are sorted by depth, every parent precedes its
children, the children of one parent are contiguous and keep the order in which they first
appeared in the input. Consequently ``levels[d]`` is a contiguous range of indices.

Immutability
------------
A ``Tree`` never changes after construction, so it can be cached and shared
(:func:`hyperloss.datasets.naics` returns one cached instance). Tensor attributes return a fresh
copy on every access; ``names``, ``index`` and ``children_index`` are read-only views (a ``list``
/ ``dict`` subclass whose mutating methods raise ``TypeError``).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from hyperloss.validation import check_index, check_real

__all__ = ["Tree", "UnknownNodeError"]

# What lca_index / distance accept for u and v.
IndexLike = int | Sequence[int] | Tensor

# Row blocks of the (N, N) computations hold about this many elements per intermediate
# (int32: 16 MiB), so the memory beyond the returned matrix stays a few such blocks.
_BLOCK_ELEMENTS = 1 << 22
# Pairs per chunk in lca_index / distance: a dozen int64 temporaries of 2 MiB each.
_PAIR_CHUNK = 1 << 18
# _build vectorises per depth level when levels hold at least this many nodes on average.
_LEVEL_WIDTH = 64


class UnknownNodeError(KeyError, ValueError):
    """A name that is not a node of the tree (both a ``KeyError`` and a ``ValueError``)."""

    def __str__(self) -> str:  # KeyError would show the message with quotes around it
        return str(self.args[0]) if self.args else ""


class Tree:
    """An immutable rooted tree with string node names.

    Build one with :meth:`from_parents`, :meth:`from_edges` or :meth:`read_tsv`
    (``Tree(mapping)`` is the same as ``Tree.from_parents(mapping)``).

    Attributes
    ----------
    names : list of str, length N
        Node names in index order (breadth first, root first). Read-only.
    index : dict of str to int
        Name -> index. Read-only.
    parent : LongTensor, shape (N,)
        Index of each node's parent; -1 at the root. A copy on each access.
    depth : LongTensor, shape (N,)
        Number of edges to the root (root 0). A copy on each access.
    branch : LongTensor, shape (N,)
        Index of each node's depth-1 ancestor (the node itself at depth 1; -1 for the root).
    levels : list of LongTensor
        ``levels[d]`` holds the (contiguous) indices of the nodes at depth ``d``.
    children_index : list of list of int
        The children of each node index, in index order. Read-only.
    root : str
        The root's name (``names[0]``).
    height : int
        The largest depth.
    DENSE_LIMIT : int, class attribute
        Largest N for which :meth:`distances` / :meth:`closure` return the full (N, N)
        matrix; beyond it use :meth:`distance` or ``rows=...``.

    Examples
    --------
    >>> tree = Tree.from_parents({"a": "root", "b": "root", "a1": "a"})
    >>> tree.names
    ['root', 'a', 'b', 'a1']
    >>> tree.distances()
    tensor([[0., 1., 1., 2.],
            [1., 0., 2., 1.],
            [1., 2., 0., 3.],
            [2., 1., 3., 0.]], dtype=torch.float64)
    """

    __slots__ = (
        "_names",
        "_index",
        "_parent",
        "_depth",
        "_branch",
        "_level_bounds",
        "_children_index",
        "_titles",
        "_pre_start",
        "_pre_end",
        "_ancestor_table",
    )

    #: Largest N for which :meth:`distances` and :meth:`closure` build the full (N, N) matrix
    #: (``rows=None``): at 20,000 nodes the float64 distances already take 3.2 GB.
    DENSE_LIMIT = 20_000

    def __init__(
        self, mapping: Mapping[str, str | None], titles: Mapping[str, str] | None = None
    ) -> None:
        other = Tree.from_parents(mapping, titles)
        for slot in Tree.__slots__:
            object.__setattr__(self, slot, getattr(other, slot))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_parents(
        cls, mapping: Mapping[str, str | None], titles: Mapping[str, str] | None = None
    ) -> Tree:
        """Build a tree from a ``{child: parent}`` mapping.

        Parameters
        ----------
        mapping : Mapping[str, str or None]
            Child -> parent. The root either is a key whose parent is ``None``, or appears only
            as a parent value and never as a key (then it is the single name that does so).
            Every other parent must itself be a key. Names are ``str``; ``int`` names are
            converted with ``str()``; anything else raises ``TypeError``.
        titles : Mapping[str, str], optional
            Human-readable titles (see :meth:`title`); titles of names that are not nodes are
            ignored.

        Raises
        ------
        ValueError
            Empty mapping; a node that is its own parent; two roots (two keys with parent
            ``None``, or several names that appear only as parents); a parent that is never
            defined (not a key and not the root); a cycle; two keys equal after ``str()``.
        TypeError
            ``mapping`` is not a mapping, or a name is neither ``str`` nor ``int``.
        """
        if not isinstance(mapping, Mapping):
            raise TypeError(f"mapping must be a Mapping of child -> parent, got {type(mapping)}")
        parent_of: dict[str, str | None] = {}
        for raw_child, raw_parent in mapping.items():
            child = _as_name(raw_child, "a node name (key of mapping)")
            if child in parent_of:
                raise ValueError(f"mapping has the name {child!r} twice (after converting to str)")
            parent = None if raw_parent is None else _as_name(raw_parent, f"parent of {child!r}")
            if parent == child:
                raise ValueError(f"node {child!r} is its own parent")
            parent_of[child] = parent
        if not parent_of:
            raise ValueError("empty tree: mapping has no nodes")

        explicit_roots = [child for child, parent in parent_of.items() if parent is None]
        parent_only = _parent_only_names(parent_of)
        if len(explicit_roots) > 1:
            raise ValueError(
                f"tree has {len(explicit_roots)} roots ({_quote(explicit_roots)}): exactly one "
                "node may have parent None"
            )
        if explicit_roots and parent_only:
            raise ValueError(
                f"undefined parent(s) {_describe_parent_only(parent_only)}: every parent must be "
                f"a key of mapping (the root is already {explicit_roots[0]!r})"
            )
        if len(parent_only) > 1:
            raise ValueError(
                f"undefined parent(s) {_describe_parent_only(parent_only)}: only the root may "
                f"appear solely as a parent, so these would make {len(parent_only)} roots; add "
                "each missing parent as a key (the root with parent None)"
            )
        if parent_only:
            parent_of = {parent_only[0][0]: None, **parent_of}
        return cls._build(parent_of, titles)

    @classmethod
    def from_edges(
        cls,
        pairs: Iterable[tuple[str, str | None]],
        titles: Mapping[str, str] | None = None,
    ) -> Tree:
        """Build a tree from ``(child, parent)`` pairs.

        Every name that occurs is a node, so the root is the one name that never appears as a
        child (or a child paired with parent ``None``). Repeating an identical pair is allowed.

        Parameters
        ----------
        pairs : iterable of (str, str or None)
            ``(child, parent)`` edges; names as in :meth:`from_parents`.
        titles : Mapping[str, str], optional
            Titles by name; see :meth:`title`.

        Raises
        ------
        ValueError
            No pairs; an item that is not a pair; a self-loop; one child with two different
            parents; zero or several roots; a cycle.
        """
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
            raise TypeError(f"pairs must be an iterable of (child, parent) pairs, got {pairs!r}")
        parent_of: dict[str, str | None] = {}
        for position, pair in enumerate(pairs):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"pairs[{position}] must be a (child, parent) pair, got {pair!r}")
            child = _as_name(pair[0], f"child of pairs[{position}]")
            parent = None if pair[1] is None else _as_name(pair[1], f"parent of pairs[{position}]")
            _add_edge(parent_of, child, parent, where=f"pairs[{position}]")
        if not parent_of:
            raise ValueError("empty tree: pairs is empty")
        return cls._from_edge_map(parent_of, titles)

    @classmethod
    def read_tsv(cls, path: str | os.PathLike, titles: Mapping[str, str] | None = None) -> Tree:
        """Read a tree from a tab-separated file of edges.

        Format: one ``child<TAB>parent`` edge per line, optionally a third column with the
        child's title (``child<TAB>parent<TAB>title``). An empty parent field marks the root
        (useful to give the root a title: ``root<TAB><TAB>All industries``); otherwise the
        root is the one name that never appears as a child. Lines starting with ``#`` and
        blank lines are skipped; fields are stripped of surrounding whitespace. UTF-8.

        Parameters
        ----------
        path : str or path-like
        titles : Mapping[str, str], optional
            Titles that take precedence over the file's third column.

        Raises
        ------
        ValueError
            A malformed line (its path and line number are in the message), a child with two
            parents, and everything :meth:`from_edges` rejects.
        """
        parent_of: dict[str, str | None] = {}
        file_titles: dict[str, str] = {}
        with open(path, encoding="utf-8-sig") as handle:
            for line_number, line in enumerate(handle, start=1):
                text = line.rstrip("\r\n")
                if not text.strip() or text.lstrip().startswith("#"):
                    continue
                fields = [field.strip() for field in text.split("\t")]
                if len(fields) not in (2, 3) or not fields[0]:
                    raise ValueError(
                        f"{os.fspath(path)}:{line_number}: malformed line {text!r}: expected "
                        "'child<TAB>parent' or 'child<TAB>parent<TAB>title'"
                    )
                child, parent = fields[0], (fields[1] or None)
                _add_edge(parent_of, child, parent, where=f"{os.fspath(path)}:{line_number}")
                if len(fields) == 3 and fields[2]:
                    file_titles[child] = fields[2]
        if not parent_of:
            raise ValueError(f"empty tree: {os.fspath(path)} has no edges")
        merged = {**file_titles, **{str(k): str(v) for k, v in (titles or {}).items()}}
        return cls._from_edge_map(parent_of, merged)

    @classmethod
    def _from_edge_map(
        cls, parent_of: dict[str, str | None], titles: Mapping[str, str] | None
    ) -> Tree:
        """Edge semantics: names only seen as parents are nodes; exactly one root overall."""
        roots = [child for child, parent in parent_of.items() if parent is None]
        parent_only = _parent_only_names(parent_of)
        roots += [name for name, _ in parent_only]
        if len(roots) > 1:
            raise ValueError(
                f"tree has {len(roots)} roots ({_quote(roots)}): exactly one name may be "
                "without a parent"
            )
        if parent_only:
            parent_of = {parent_only[0][0]: None, **parent_of}
        return cls._build(parent_of, titles)

    @classmethod
    def _build(cls, parent_of: dict[str, str | None], titles: Mapping[str, str] | None) -> Tree:
        """Breadth-first indexing of a validated map with at most one root (cycles detected)."""
        roots = [child for child, parent in parent_of.items() if parent is None]
        if not roots:
            raise ValueError(f"the parents form a cycle ({_find_cycle(parent_of)}); no root")
        children: dict[str, list[str]] = {}
        for child, parent in parent_of.items():
            if parent is not None:
                children.setdefault(parent, []).append(child)

        names = [roots[0]]
        parent_index = [-1]
        depth = [0]
        index = {roots[0]: 0}
        cursor = 0
        while cursor < len(names):
            for child in children.get(names[cursor], ()):
                index[child] = len(names)
                names.append(child)
                parent_index.append(cursor)
                depth.append(depth[cursor] + 1)
            cursor += 1
        if len(names) != len(parent_of):
            unreachable = {name: parent_of[name] for name in parent_of if name not in index}
            raise ValueError(f"the parents form a cycle ({_find_cycle(unreachable)})")

        tree = object.__new__(cls)
        set_slot = object.__setattr__
        n_nodes = len(names)
        set_slot(tree, "_names", _FrozenList(names))
        set_slot(tree, "_index", _FrozenDict(index))
        parent = torch.tensor(parent_index, dtype=torch.long)
        depth_tensor = torch.tensor(depth, dtype=torch.long)
        set_slot(tree, "_parent", parent)
        set_slot(tree, "_depth", depth_tensor)
        level_starts = (torch.nonzero(depth_tensor[1:] != depth_tensor[:-1]).flatten() + 1).tolist()
        bounds = (0, *level_starts, n_nodes)
        set_slot(tree, "_level_bounds", bounds)

        # The children of v are the contiguous range first_child[v] + [0, child_count[v]).
        child_count = torch.bincount(parent[1:], minlength=n_nodes)
        first_child = torch.cumsum(child_count, 0) - child_count + 1
        set_slot(
            tree,
            "_children_index",
            _FrozenList(
                _FrozenList(range(first, first + count))
                for first, count in zip(first_child.tolist(), child_count.tolist(), strict=True)
            ),
        )
        # Per-level torch ops cost ~tens of microseconds each, a plain loop ~1 us per node:
        # take the level loop only where levels are wide (random / real taxonomies), so that
        # deep path-like trees do not pay ~height torch calls.
        orders = (
            _orders_by_level if _LEVEL_WIDTH * (len(bounds) - 2) <= n_nodes else _orders_by_node
        )
        branch, pre_start, subtree_size = orders(parent, bounds, first_child)
        set_slot(tree, "_branch", branch)

        titles = {} if titles is None else titles
        if not isinstance(titles, Mapping):
            raise TypeError(f"titles must be a Mapping of name -> title, got {type(titles)}")
        kept = {}
        for raw_name, title in titles.items():
            name = str(raw_name)
            if name in index and title is not None:
                kept[name] = str(title)
        set_slot(tree, "_titles", kept)

        # Depth-first preorder (children in index order): the subtree of v is the contiguous
        # position range [pre_start[v], pre_end[v]); the distance computation relies on it.
        set_slot(tree, "_pre_start", pre_start)
        set_slot(tree, "_pre_end", pre_start + subtree_size)
        set_slot(tree, "_ancestor_table", _ancestor_table(tree._parent, tree.height))
        return tree

    # ------------------------------------------------------------------ attributes
    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Tree is immutable; cannot set {name!r}")

    @property
    def names(self) -> list[str]:
        return self._names

    @property
    def index(self) -> dict[str, int]:
        return self._index

    @property
    def parent(self) -> Tensor:
        return self._parent.clone()

    @property
    def depth(self) -> Tensor:
        return self._depth.clone()

    @property
    def branch(self) -> Tensor:
        return self._branch.clone()

    @property
    def levels(self) -> list[Tensor]:
        bounds = self._level_bounds
        return [torch.arange(bounds[d], bounds[d + 1]) for d in range(len(bounds) - 1)]

    @property
    def children_index(self) -> list[list[int]]:
        return self._children_index

    @property
    def root(self) -> str:
        return self._names[0]

    @property
    def height(self) -> int:
        return len(self._level_bounds) - 2

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        try:
            return _as_name(name, "name") in self._index
        except (TypeError, ValueError):
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __repr__(self) -> str:
        return f"Tree(n_nodes={len(self)}, height={self.height}, root={self.root!r})"

    def __reduce__(self):
        return (_rebuild_tree, (self.to_parents(), dict(self._titles)))

    # ------------------------------------------------------------------ lookups
    def indices(self, names: Iterable[str]) -> Tensor:
        """Indices of ``names`` as a LongTensor of shape ``(len(names),)``.

        Raises
        ------
        UnknownNodeError
            (a ``ValueError`` and ``KeyError``) naming the unknown names.
        TypeError
            ``names`` is a single ``str`` (wrap it in a list).
        """
        if isinstance(names, str):
            raise TypeError("names must be an iterable of names, not a single str")
        result: list[int] = []
        unknown: list[object] = []
        for name in names:
            try:
                result.append(self._index[_as_name(name, "name")])
            except (KeyError, TypeError, ValueError):
                unknown.append(name)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise UnknownNodeError(f"unknown node name(s): {shown}{more}")
        return torch.tensor(result, dtype=torch.long)

    def ancestors(self, name: str) -> list[str]:
        """Proper ancestors of ``name``: parent first, root last (``[]`` for the root)."""
        node = self._node(name)
        result = []
        parent = self._parent
        node = int(parent[node])
        while node >= 0:
            result.append(self._names[node])
            node = int(parent[node])
        return result

    def children(self, name: str) -> list[str]:
        """Children of ``name`` in index order."""
        return [self._names[c] for c in self._children_index[self._node(name)]]

    def title(self, name: str) -> str:
        """The title of ``name`` (the name itself when it has none)."""
        key = self._names[self._node(name)]
        return self._titles.get(key, key)

    @property
    def titles(self) -> dict[str, str]:
        """A copy of the titles that were given, by name."""
        return dict(self._titles)

    def lca(self, a: str, b: str) -> str:
        """The lowest common ancestor of ``a`` and ``b`` (a node is its own ancestor here)."""
        i, j = self._node(a), self._node(b)
        depth, parent = self._depth, self._parent
        while depth[i] > depth[j]:
            i = int(parent[i])
        while depth[j] > depth[i]:
            j = int(parent[j])
        while i != j:
            i, j = int(parent[i]), int(parent[j])
        return self._names[i]

    # ------------------------------------------------------------------ on-demand distances
    def lca_index(self, u: IndexLike, v: IndexLike) -> Tensor:
        """Lowest common ancestors of index pairs, by binary lifting (a node is its own ancestor).

        Parameters
        ----------
        u, v : int, sequence of int, or integer tensor
            Node indices in ``[0, N)``; they broadcast against each other to a shape ``S``
            (e.g. ``(B, 1)`` anchors against ``(B, L)`` items).

        Returns
        -------
        LongTensor, shape S
            ``lca(u, v)`` elementwise, on the device of the first tensor among ``u``, ``v``
            (computed on the CPU, where the tree lives).

        Raises
        ------
        TypeError
            ``u`` or ``v`` is not integer-valued (float, bool, str, ...).
        ValueError
            ``u`` or ``v`` holds an index outside ``[0, N)``, or their shapes do not broadcast.

        Notes
        -----
        Cost: O(log height) vectorised gathers per pair (no Python loop over pairs), extra
        memory O(|S|) in bounded chunks; the ancestor table built with the tree takes
        ``N * max(1, height.bit_length())`` int32 entries.

        Examples
        --------
        >>> tree = Tree.from_parents({"a": "root", "b": "root", "a1": "a"})
        >>> tree.lca_index(torch.tensor([3, 3, 1]), torch.tensor([1, 2, 1]))
        tensor([1, 0, 1])
        """
        first, second, shape, device = self._pair_indices(u, v)
        result = torch.empty(first.numel(), dtype=torch.long)
        for start in range(0, first.numel(), _PAIR_CHUNK):
            stop = start + _PAIR_CHUNK
            result[start:stop] = self._lca_chunk(first[start:stop], second[start:stop])[0]
        return result.reshape(shape).to(device)

    def distance(self, u: IndexLike, v: IndexLike, *, lineal_discount: float = 0.0) -> Tensor:
        """Tree path lengths of index pairs, on demand: nothing N x N.

        ``d(u, v) = depth[u] + depth[v] - 2 * depth[lca(u, v)]``, minus ``lineal_discount``
        when ``u != v`` and one is an ancestor of the other; the same numbers as the entries
        ``tree.distances(lineal_discount=...)[u, v]``.

        Parameters
        ----------
        u, v : int, sequence of int, or integer tensor
            Node indices in ``[0, N)``, broadcasting to a common shape ``S``.
        lineal_discount : float, default 0.0
            As in :meth:`distances`; ``0 <= lineal_discount < 1``.

        Returns
        -------
        Tensor, float64, shape S
            On the device of the first tensor among ``u``, ``v``.

        Raises
        ------
        TypeError
            ``u`` or ``v`` is not integer-valued; ``lineal_discount`` is not a real number.
        ValueError
            An index outside ``[0, N)``; shapes that do not broadcast; ``lineal_discount``
            outside ``[0, 1)``.

        Notes
        -----
        Cost: O(log height) vectorised gathers per pair (see :meth:`lca_index`), memory
        O(|S|); a million pairs on a million-node tree take a fraction of a second.

        Examples
        --------
        >>> tree = Tree.from_parents({"a": "root", "b": "root", "a1": "a"})
        >>> tree.distance(torch.tensor([[3], [2]]), torch.tensor([[0, 1, 2], [0, 1, 3]]))
        tensor([[2., 1., 3.],
                [1., 2., 3.]], dtype=torch.float64)
        >>> tree.distance(3, 1, lineal_discount=0.5)
        tensor(0.5000, dtype=torch.float64)
        """
        discount = _check_discount(lineal_discount)
        first, second, shape, device = self._pair_indices(u, v)
        result = torch.empty(first.numel(), dtype=torch.float64)
        for start in range(0, first.numel(), _PAIR_CHUNK):
            stop = start + _PAIR_CHUNK
            a, b = first[start:stop], second[start:stop]
            lca, depth_a, depth_b = self._lca_chunk(a, b)
            path_length = depth_a + depth_b - 2 * self._depth.index_select(0, lca)
            target = result[start:stop]
            target.copy_(path_length)
            if discount:
                lineal = ((lca == a) | (lca == b)) & (a != b)
                target.sub_(lineal.to(torch.float64), alpha=discount)
        return result.reshape(shape).to(device)

    def subtree(self, name: str) -> Tree:
        """The subtree rooted at ``name`` as a new tree (titles kept)."""
        top = self._node(name)
        start, end = int(self._pre_start[top]), int(self._pre_end[top])
        inside = ((self._pre_start >= start) & (self._pre_start < end)).nonzero().flatten()
        parent_of = {}
        for node in inside.tolist():
            parent_of[self._names[node]] = (
                None if node == top else self._names[int(self._parent[node])]
            )
        return Tree._build(parent_of, self._titles)

    def to_parents(self) -> dict[str, str | None]:
        """``{name: parent name}`` in index order, the root mapped to ``None``."""
        parents = self._parent.tolist()
        names = self._names
        return {name: (None if p < 0 else names[p]) for name, p in zip(names, parents, strict=True)}

    def write_tsv(self, path: str | os.PathLike) -> None:
        """Write the format :meth:`read_tsv` reads (root line with an empty parent; titles)."""
        with open(path, "w", encoding="utf-8") as handle:
            for name, parent in self.to_parents().items():
                title = self._titles.get(name)
                fields = [name, parent or ""] + ([title] if title is not None else [])
                handle.write("\t".join(fields) + "\n")

    # ------------------------------------------------------------------ matrices
    def distances(
        self, *, lineal_discount: float = 0.0, rows: Sequence[int] | Tensor | None = None
    ) -> Tensor:
        """Tree path lengths between nodes, through their lowest common ancestor.

        ``d(i, j) = depth[i] + depth[j] - 2 * depth[lca(i, j)]``, minus ``lineal_discount``
        when one of ``i != j`` is an ancestor of the other. Computed in row blocks without a
        Python loop over pairs; extra memory beyond the result is a few blocks of about
        4M elements.

        The full matrix (``rows=None``) costs ``8 * N**2`` bytes (NAICS, 2,126 nodes: 36 MB;
        20,000 nodes: 3.2 GB; ICD-10-CM, 98,506 nodes: 78 GB), so it is refused past
        :attr:`DENSE_LIMIT` nodes. For large trees use :meth:`distance` for chosen index pairs
        or ``rows=...`` for the full rows of chosen anchors (``8 * len(rows) * N`` bytes).

        Parameters
        ----------
        lineal_discount : float, default 0.0
            Subtracted from ancestor-descendant pairs; must satisfy ``0 <= lineal_discount < 1``
            so that every off-diagonal distance stays positive (0.5 is the convention of the
            original NAICS research code).
        rows : sequence of int or LongTensor, optional
            Compute only these rows (node indices); the result is then ``(len(rows), N)``.
            Works at any N; use it to bound memory on large trees.

        Raises
        ------
        ValueError
            ``rows`` is None and the tree has more than :attr:`DENSE_LIMIT` nodes; a row index
            outside ``[0, N)``; ``lineal_discount`` outside ``[0, 1)``.
        TypeError
            ``rows`` holds non-integers (floats, bools) or ``lineal_discount`` is not a real
            number.

        Notes
        -----
        Cost: O(N) per row for the prefix sums, plus one small scatter per ancestor of each row,
        so time grows with the height only mildly (NAICS: tens of milliseconds; a 20,000-node
        random tree: a few seconds, mostly writing the 3.2 GB result; a 10,000-node path:
        about 4 s).

        Returns
        -------
        Tensor, float64, shape (N, N) or (len(rows), N)
            Symmetric with a zero diagonal (when ``rows`` is None).
        """
        discount = _check_discount(lineal_discount)
        if rows is None:
            self._check_dense("distances", element_bytes=8)
        row_index = self._row_index(rows)
        out = torch.empty((row_index.numel(), len(self)), dtype=torch.float64)
        depth = self._depth.to(self._count_dtype())
        for first, block, lca_depth in self._lca_depth_blocks(row_index):
            target = out[first : first + block.numel()]
            lineal = self._lineal_block(block, lca_depth) if discount else None
            # Integer arithmetic in place on the reused block buffer, one cast to float64.
            path_length = lca_depth.mul_(-2).add_(depth[None, :]).add_(depth[block, None])
            target.copy_(path_length)
            if lineal is not None:
                target.add_(lineal, alpha=-discount)
        return out

    def closure(self, *, rows: Sequence[int] | Tensor | None = None) -> Tensor:
        """Symmetrized ancestor relation: ``True`` where one node is a proper ancestor of the other.

        Parameters
        ----------
        rows : sequence of int or LongTensor, optional
            Compute only these rows (node indices); works at any N (``len(rows) * N`` bytes).

        Returns
        -------
        Tensor, bool, shape (N, N) or (len(rows), N)
            Symmetric, diagonal ``False``; the relevance matrix of graph reconstruction.

        Raises
        ------
        ValueError
            ``rows`` is None and the tree has more than :attr:`DENSE_LIMIT` nodes (the full
            matrix costs ``N**2`` bytes: 400 MB at 20,000 nodes); a row index outside
            ``[0, N)``.
        TypeError
            ``rows`` holds non-integers (floats, bools).
        """
        if rows is None:
            self._check_dense("closure", element_bytes=1)
        row_index = self._row_index(rows)
        out = torch.empty((row_index.numel(), len(self)), dtype=torch.bool)
        for first, block, lca_depth in self._lca_depth_blocks(row_index):
            out[first : first + block.numel()] = self._lineal_block(block, lca_depth)
        return out

    # ------------------------------------------------------------------ helpers
    def _node(self, name: object) -> int:
        try:
            return self._index[_as_name(name, "name")]
        except (KeyError, TypeError, ValueError):
            raise UnknownNodeError(f"unknown node name: {name!r}") from None

    def _check_dense(self, method: str, *, element_bytes: int) -> None:
        n_nodes = len(self)
        limit = type(self).DENSE_LIMIT
        if n_nodes > limit:
            size = element_bytes * n_nodes * n_nodes
            raise ValueError(
                f"tree.{method}() without rows would build a dense ({n_nodes}, {n_nodes}) "
                f"matrix of {size:,} bytes ({size / 1e9:.1f} GB); it is refused for trees of "
                f"more than Tree.DENSE_LIMIT = {limit:,} nodes. Use tree.distance(u, v) for "
                f"the index pairs you need, or tree.{method}(rows=...) for the rows of chosen "
                "anchors"
            )

    def _row_index(self, rows: Sequence[int] | Tensor | None) -> Tensor:
        n_nodes = len(self)
        if rows is None:
            return torch.arange(n_nodes)
        row_index = _as_index_tensor(rows, "rows", n_nodes)
        if row_index.dim() != 1:
            raise ValueError(
                f"rows must be a 1-D sequence of node indices, got shape {tuple(row_index.shape)}"
            )
        return row_index

    def _pair_indices(
        self, u: IndexLike, v: IndexLike
    ) -> tuple[Tensor, Tensor, torch.Size, torch.device]:
        """Validated, broadcast, flattened int64 CPU copies of ``u`` and ``v``, the broadcast
        shape and the device the result goes back to."""
        first = _as_index_tensor(u, "u", len(self))
        second = _as_index_tensor(v, "v", len(self))
        try:
            shape = torch.broadcast_shapes(first.shape, second.shape)
        except RuntimeError:
            raise ValueError(
                f"u with shape {tuple(first.shape)} and v with shape {tuple(second.shape)} do "
                "not broadcast to a common shape"
            ) from None
        device = next((x.device for x in (u, v) if isinstance(x, Tensor)), torch.device("cpu"))
        first = first.cpu().expand(shape).reshape(-1)
        second = second.cpu().expand(shape).reshape(-1)
        return first, second, shape, device

    def _lca_chunk(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(lca, depth[a], depth[b])`` for flat int64 index tensors ``a``, ``b``.

        Binary lifting: lift the deeper node by the depth gap (bit ``k`` of the gap is one jump
        of ``2**k``), then, from the longest jump down, jump both nodes while their ancestors
        differ; the lca is then the common parent. One vectorised gather per level.
        """
        table = self._ancestor_table
        depth_a = self._depth.index_select(0, a)
        depth_b = self._depth.index_select(0, b)
        a_deeper = depth_a >= depth_b
        deep = torch.where(a_deeper, a, b)
        shallow = torch.where(a_deeper, b, a)
        gap = (depth_a - depth_b).abs_()
        max_gap = int(gap.max()) if gap.numel() else 0
        for level in range(max_gap.bit_length()):
            jump = (gap >> level) & 1 == 1
            deep = torch.where(jump, table[level].index_select(0, deep), deep)
        # Jumps longer than the shallower depth overshoot the root for every pair: skip them.
        shallow_depth = torch.minimum(depth_a, depth_b)
        top = int(shallow_depth.max()).bit_length() if shallow_depth.numel() else 0
        for level in range(top - 1, -1, -1):
            up_deep = table[level].index_select(0, deep)
            up_shallow = table[level].index_select(0, shallow)
            differ = up_deep != up_shallow
            deep = torch.where(differ, up_deep, deep)
            shallow = torch.where(differ, up_shallow, shallow)
        lca = torch.where(deep == shallow, deep, table[0].index_select(0, deep))
        return lca.long(), depth_a, depth_b

    def _count_dtype(self) -> torch.dtype:
        # Path lengths are at most 2 * height; int16 halves the memory traffic when it fits.
        return torch.int16 if 2 * self.height < torch.iinfo(torch.int16).max else torch.int32

    def _lca_depth_blocks(self, row_index: Tensor) -> Iterator[tuple[int, Tensor, Tensor]]:
        """Yield ``(first, rows, lca_depth)`` per block of rows; ``lca_depth[r, j]`` is the
        depth of lca(rows[r], j), shape (len(rows), N), columns in index order.

        The ``lca_depth`` buffer is reused by the next block (consume it before advancing).

        In depth-first preorder the subtree of v is a contiguous range [start_v, end_v). The
        lca depth of a and b counts the non-root nodes v whose subtree holds both, so row a
        (in preorder columns) is the prefix sum of +1 at start_v and -1 at end_v over a's
        non-root ancestors-or-self v: one scatter per ancestor level, one cumsum, one gather.
        Cost O(N) per row plus one small scatter per level of the row's depth.
        """
        n_nodes = len(self)
        block_rows = min(max(1, _BLOCK_ELEMENTS // n_nodes), max(1, row_index.numel()))
        count_dtype = self._count_dtype()
        marks = torch.empty((block_rows, n_nodes + 1), dtype=count_dtype)
        lca_preorder = torch.empty((block_rows, n_nodes), dtype=count_dtype)
        lca_depth = torch.empty((block_rows, n_nodes), dtype=count_dtype)
        for first in range(0, row_index.numel(), block_rows):
            rows = row_index[first : first + block_rows]
            n_rows = rows.numel()
            block_marks = marks[:n_rows].zero_()
            row_position = torch.arange(n_rows)
            current = rows.clone()
            plus = torch.ones(n_rows, dtype=count_dtype)
            while True:
                active = current > 0  # index 0 is the root; it adds nothing to an lca depth
                if not bool(active.any()):
                    break
                if not bool(active.all()):
                    row_position, current, plus = (
                        row_position[active],
                        current[active],
                        plus[active],
                    )
                block_marks.index_put_(
                    (row_position, self._pre_start[current]), plus, accumulate=True
                )
                block_marks.index_put_(
                    (row_position, self._pre_end[current]), -plus, accumulate=True
                )
                current = self._parent[current]
            torch.cumsum(
                block_marks[:, :n_nodes], dim=1, dtype=count_dtype, out=lca_preorder[:n_rows]
            )
            torch.index_select(lca_preorder[:n_rows], 1, self._pre_start, out=lca_depth[:n_rows])
            yield first, rows, lca_depth[:n_rows]

    def _lineal_block(self, rows: Tensor, lca_depth: Tensor) -> Tensor:
        """True where row node and column node differ and one is the other's ancestor."""
        depth = self._depth.to(lca_depth.dtype)
        lineal = lca_depth == torch.minimum(depth[rows, None], depth[None, :])
        lineal[torch.arange(rows.numel()), rows] = False
        return lineal


# ---------------------------------------------------------------------- module helpers
class _FrozenList(list):
    """A list whose mutating methods raise ``TypeError`` (equal to the plain list)."""

    __slots__ = ()

    def _immutable(self, *args, **kwargs):
        raise TypeError("this list belongs to an immutable Tree; copy it with list(...) first")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _immutable
    append = extend = insert = pop = remove = clear = sort = reverse = _immutable

    def __reduce__(self):
        return (_FrozenList, (list(self),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


class _FrozenDict(dict):
    """A dict whose mutating methods raise ``TypeError``."""

    __slots__ = ()

    def _immutable(self, *args, **kwargs):
        raise TypeError("this dict belongs to an immutable Tree; copy it with dict(...) first")

    __setitem__ = __delitem__ = __ior__ = _immutable
    pop = popitem = clear = update = setdefault = _immutable

    def __reduce__(self):
        return (_FrozenDict, (dict(self),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def _orders_by_level(
    parent: Tensor, bounds: tuple[int, ...], first_child: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(branch, pre_start, subtree_size)`` with a few torch ops per depth level.

    Breadth-first order makes each level a contiguous range whose parents sit in the level
    above (already final). A child starts in preorder right after its parent plus the subtrees
    of its earlier siblings (an exclusive cumsum within the sibling group).
    """
    n_nodes = parent.numel()
    level_ranges = [(bounds[d], bounds[d + 1]) for d in range(1, len(bounds) - 1)]
    branch = torch.arange(n_nodes)
    branch[0] = -1
    for low, high in level_ranges[1:]:
        branch[low:high] = branch[parent[low:high]]
    subtree_size = torch.ones(n_nodes, dtype=torch.long)
    for low, high in reversed(level_ranges):
        subtree_size.index_add_(0, parent[low:high], subtree_size[low:high].clone())
    pre_start = torch.zeros(n_nodes, dtype=torch.long)
    for low, high in level_ranges:
        level_parent = parent[low:high]
        before = torch.cumsum(subtree_size[low:high], 0) - subtree_size[low:high]
        before_siblings = before - before[first_child[level_parent] - low]
        pre_start[low:high] = pre_start[level_parent] + 1 + before_siblings
    return branch, pre_start, subtree_size


def _orders_by_node(
    parent: Tensor, bounds: tuple[int, ...], first_child: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The same as :func:`_orders_by_level` with plain loops over nodes (for deep trees)."""
    parent_index = parent.tolist()
    n_nodes = len(parent_index)
    depth_one_end = bounds[2] if len(bounds) > 2 else n_nodes
    branch = [-1] * n_nodes
    for node in range(1, n_nodes):
        branch[node] = node if node < depth_one_end else branch[parent_index[node]]
    subtree_size = [1] * n_nodes
    for node in range(n_nodes - 1, 0, -1):
        subtree_size[parent_index[node]] += subtree_size[node]
    first = first_child.tolist()
    pre_start = [0] * n_nodes
    for node in range(1, n_nodes):
        # Children are visited in index order, so a child that is not the first one starts
        # right after the subtree of its previous sibling (node - 1).
        p = parent_index[node]
        pre_start[node] = (
            pre_start[p] + 1 if node == first[p] else (pre_start[node - 1] + subtree_size[node - 1])
        )
    return (
        torch.tensor(branch, dtype=torch.long),
        torch.tensor(pre_start, dtype=torch.long),
        torch.tensor(subtree_size, dtype=torch.long),
    )


def _ancestor_table(parent: Tensor, height: int) -> Tensor:
    """Binary-lifting table, shape (max(1, height.bit_length()), N): row ``k`` holds the
    ``2**k``-th ancestor of every node, clamped at the root (the root is its own parent here),
    so jumps past the root stay at the root. int32 halves the memory (N < 2**31 always here)."""
    level_zero = parent.clone()
    level_zero[0] = 0
    table = torch.empty((max(1, height.bit_length()), parent.numel()), dtype=torch.int32)
    table[0] = level_zero
    for level in range(1, table.shape[0]):
        table[level] = table[level - 1].index_select(0, table[level - 1])
    return table


def _as_index_tensor(value: object, name: str, n_nodes: int) -> Tensor:
    """``value`` (an int, a sequence of ints or an integer tensor on any device, any shape) as an
    int64 CPU tensor of node indices in [0, n_nodes): the conversion is this module's, the
    rule is :func:`hyperloss.validation.check_index`'s."""
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name} must hold integer node indices, got the str {value!r} (use tree.index[...] "
            "or tree.indices([...]) to turn names into indices)"
        )
    if isinstance(value, Tensor):
        tensor = value.detach()
    else:
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"{name} must be an int, a sequence of ints or an integer tensor, got "
                f"{type(value).__name__} ({error})"
            ) from None
        if tensor.numel() == 0:  # [] becomes float32; an empty selection is still valid
            tensor = tensor.long()
    return check_index(tensor, name, n_nodes)


def _rebuild_tree(parents: dict[str, str | None], titles: dict[str, str]) -> Tree:
    return Tree._build(parents, titles)


def _as_name(value: object, what: str) -> str:
    """Node names are non-empty str; ints are converted with str() (bools are not ints here)."""
    if isinstance(value, str):
        name = value
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        name = str(int(value))
    else:
        raise TypeError(f"{what} must be a str or an int, got {type(value).__name__} {value!r}")
    if not name:
        raise ValueError(f"{what} must be a non-empty name, got ''")
    return name


def _add_edge(
    parent_of: dict[str, str | None], child: str, parent: str | None, *, where: str
) -> None:
    if parent == child:
        raise ValueError(f"{where}: node {child!r} is its own parent")
    if child in parent_of and parent_of[child] != parent:
        raise ValueError(
            f"{where}: child {child!r} has two parents, {parent_of[child]!r} and {parent!r}"
        )
    parent_of.setdefault(child, parent)


def _parent_only_names(parent_of: Mapping[str, str | None]) -> list[tuple[str, list[str]]]:
    """Names used as a parent but never as a child, each with its children (first-seen order)."""
    found: dict[str, list[str]] = {}
    for child, parent in parent_of.items():
        if parent is not None and parent not in parent_of:
            found.setdefault(parent, []).append(child)
    return list(found.items())


def _describe_parent_only(parent_only: list[tuple[str, list[str]]]) -> str:
    parts = [f"{name!r} (parent of {_quote(children, 3)})" for name, children in parent_only[:5]]
    more = f" and {len(parent_only) - 5} more" if len(parent_only) > 5 else ""
    return ", ".join(parts) + more


def _quote(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _find_cycle(parent_of: Mapping[str, str | None]) -> str:
    """Describe one cycle, e.g. "'a' -> 'b' -> 'a'", walking parents from the first name."""
    seen: dict[str, int] = {}
    path: list[str] = []
    node: str | None = next(iter(parent_of))
    while node is not None and node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = parent_of.get(node)
    if node is None:  # should not happen for an unreachable set; stay informative anyway
        return " -> ".join(repr(n) for n in path[:10])
    cycle = path[seen[node] :] + [node]
    if len(cycle) > 12:
        cycle = cycle[:5] + ["..."] + cycle[-5:]
        return " -> ".join(n if n == "..." else repr(n) for n in cycle)
    return " -> ".join(repr(n) for n in cycle)


def _check_discount(lineal_discount: float) -> float:
    try:
        value = check_real(lineal_discount, "lineal_discount")
    except ValueError:  # NaN or inf: say which range is allowed
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"lineal_discount must satisfy 0 <= lineal_discount < 1 (so that distances between "
            f"distinct nodes stay positive), got {lineal_discount!r}"
        )
    return value
