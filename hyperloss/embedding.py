"""The result of an embedding: points on the Lorentz model with their names.

An :class:`Embedding` holds ``N`` points on the hyperboloid of curvature ``-c``
(``c = curvature``) as an ``(N, dim + 1)`` float64 tensor, time coordinate first,
together with the node names they stand for. It knows its manifold and distance,
answers nearest-neighbour queries, scores itself against a tree with the metrics
layer, converts to the Poincaré ball and saves to / loads from a portable directory.

On-disk format (``FORMAT_VERSION = 1``)
---------------------------------------
``save(directory)`` writes two files:

``points.npy``
    The ``(N, dim + 1)`` float64 Lorentz coordinates (NumPy ``.npy``, no pickle).
    Row ``i`` is the point of ``names[i]``; column 0 is the time coordinate.
    Every row satisfies ``-x_0^2 + x_1^2 + ... + x_dim^2 = -1 / curvature`` and ``x_0 > 0``.
``embedding.json``
    A UTF-8 JSON object with the keys ``"format"`` (always ``"hyperloss.embedding"``),
    ``"format_version"`` (``1``), ``"model"`` (``"lorentz"``), ``"n_points"``, ``"dim"``,
    ``"curvature"`` (``c > 0``: sectional curvature ``-c``), ``"names"`` (list of ``N`` strings,
    in row order) and ``"metrics"`` (a flat object of numbers, e.g. ``"spearman"``,
    ``"ndcg@10"``; may be empty).

Any language that reads ``.npy`` and JSON can use the result; the Poincaré coordinates
are ``x_{1..dim} / (1 + sqrt(c) x_0)`` (see :meth:`Embedding.to_poincare`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperloss.geometry import LorentzDistance, lorentz, lorentz_to_poincare, pairwise_distances
from hyperloss.validation import all_finite, check_curvature, check_int

__all__ = ["Embedding", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_FORMAT_NAME = "hyperloss.embedding"
_POINTS_FILE = "points.npy"
_META_FILE = "embedding.json"
# Relative tolerance on the hyperboloid constraint -x0^2 + |x|^2 = -1/c. Far from the origin
# x0 ~ e^r / 2, so the constraint can only hold to ~1e-16 relative to x0^2 in float64.
_ON_MANIFOLD_RTOL = 1e-6


class Embedding:
    """Named points on the Lorentz (hyperboloid) model of hyperbolic space.

    Parameters
    ----------
    points : Tensor or array-like of shape (N, dim + 1)
        Lorentz coordinates, time coordinate first; converted to float64 and detached.
        Each row must satisfy ``-x_0^2 + |x_{1..dim}|^2 = -1 / curvature`` with ``x_0 > 0``
        (relative tolerance 1e-6).
    names : sequence of str, length N
        Unique node names, one per row of ``points``.
    curvature : float, default 1.0
        ``c > 0``; the space has sectional curvature ``-c`` (geoopt's ``k = 1 / c``).
    metrics : mapping, optional
        Fidelity numbers to keep with the embedding (e.g. ``FidelityReport.as_dict()``);
        saved to ``embedding.json``.

    Attributes
    ----------
    points : Tensor (N, dim + 1), float64
    names : list of str
    index : dict[str, int]
        Row of each name.
    dim : int
        Dimension of the hyperbolic space (``points.shape[1] - 1``).
    curvature : float
    manifold : geoopt.Lorentz
        float64 manifold with ``k = 1 / curvature``.
    distance_fn : hyperloss.geometry.LorentzDistance
        Broadcasting geodesic distance ``(x, y) -> d(x, y)``.
    metrics : dict

    Examples
    --------
    >>> import torch
    >>> from hyperloss.geometry import expmap0
    >>> points = expmap0(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64))
    >>> emb = Embedding(points, ["a", "b", "c"])
    >>> emb.dim, len(emb)
    (2, 3)
    >>> [name for name, _ in emb.nearest("a", k=2)]
    ['b', 'c']
    """

    def __init__(
        self,
        points: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
        names: Sequence[str],
        curvature: float = 1.0,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        self.curvature = check_curvature(curvature)
        self.points = _check_points(points, self.curvature)
        self.names = _check_names(names, self.points.shape[0])
        self.index = {name: i for i, name in enumerate(self.names)}
        if metrics is not None and not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping or None, got {type(metrics).__name__}")
        self.metrics: dict[str, Any] = dict(metrics) if metrics is not None else {}
        self.distance_fn = LorentzDistance(self.curvature)
        self.manifold = lorentz(self.curvature)

    # ------------------------------------------------------------------ basics
    @property
    def dim(self) -> int:
        """Dimension of the hyperbolic space (ambient Lorentz dimension minus one)."""
        return self.points.shape[1] - 1

    def __len__(self) -> int:
        return self.points.shape[0]

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def __repr__(self) -> str:
        return (
            f"Embedding(n_points={len(self)}, dim={self.dim}, curvature={self.curvature:g}"
            + (f", metrics={{{len(self.metrics)} keys}}" if self.metrics else "")
            + ")"
        )

    # ---------------------------------------------------------------- geometry
    def distances(self, *, chunk_size: int = 1024) -> torch.Tensor:
        """All pairwise geodesic distances.

        Parameters
        ----------
        chunk_size : int, default 1024
            Rows computed per block (memory is ``chunk_size * N`` values per block).

        Returns
        -------
        Tensor (N, N), float64
            Symmetric, zero diagonal.
        """
        with torch.no_grad():
            return pairwise_distances(self.distance_fn, self.points, chunk_size=chunk_size)

    def nearest(self, name: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` points closest to ``name`` (the point itself excluded).

        Parameters
        ----------
        name : str
            A name of this embedding.
        k : int, default 10
            Number of neighbours, ``k >= 1``; at most ``N - 1`` are returned.

        Returns
        -------
        list of (str, float)
            ``(name, geodesic distance)`` pairs sorted by increasing distance; ties keep row
            order.

        Raises
        ------
        TypeError
            If ``name`` is not a str or ``k`` is not an int.
        ValueError
            If ``name`` is not in the embedding or ``k < 1``.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if name not in self.index:
            raise ValueError(f"name {name!r} is not in the embedding ({len(self)} names)")
        k = check_int(k, "k", minimum=1)
        row = self.index[name]
        with torch.no_grad():
            dist = self.distance_fn(self.points[row][None, :], self.points).reshape(-1)
        dist = dist.clone()
        dist[row] = math.inf
        order = torch.sort(dist, stable=True).indices[: min(int(k), len(self) - 1)]
        return [(self.names[i], float(dist[i])) for i in order.tolist()]

    def to_poincare(self) -> torch.Tensor:
        """Coordinates in the Poincaré ball of the same curvature.

        Returns
        -------
        Tensor (N, dim), float64
            ``x_{1..dim} / (1 + sqrt(c) x_0)``; norms are below ``1 / sqrt(c)``.
        """
        return lorentz_to_poincare(self.points, curvature=self.curvature)

    # ----------------------------------------------------------------- quality
    def evaluate(self, tree: Any, **kwargs: Any) -> Any:
        """Score this embedding against ``tree`` with :func:`hyperloss.metrics.evaluate`.

        Parameters
        ----------
        tree : hyperloss.trees.Tree
            Must have exactly this embedding's names (in any order; the points are reordered
            to the tree's index order).
        **kwargs
            Passed to :func:`hyperloss.metrics.evaluate` (``k``, ``chunk_size``).

        Returns
        -------
        hyperloss.metrics.FidelityReport
        """
        from hyperloss.metrics import evaluate

        points = self.points_for(tree)
        return evaluate(points, tree, self.distance_fn, **kwargs)

    def points_for(self, tree: Any) -> torch.Tensor:
        """The points in ``tree``'s index order.

        Parameters
        ----------
        tree : hyperloss.trees.Tree
            A tree with exactly this embedding's names.

        Returns
        -------
        Tensor (N, dim + 1)
            Row ``i`` is the point of ``tree.names[i]``.

        Raises
        ------
        ValueError
            If the tree's names differ from the embedding's (the first few differences are named).
        """
        tree_names = list(tree.names)
        if tree_names == self.names:
            return self.points
        missing = [n for n in tree_names if n not in self.index]
        extra = set(self.names).difference(tree_names)
        if missing or extra or len(tree_names) != len(self.names):
            raise ValueError(
                "tree names do not match the embedding names: "
                f"{len(missing)} tree names not embedded (e.g. {missing[:3]}), "
                f"{len(extra)} embedded names not in the tree (e.g. {sorted(extra)[:3]})"
            )
        rows = torch.tensor([self.index[n] for n in tree_names], dtype=torch.long)
        return self.points[rows]

    def plot(self, path: str | Path, tree: Any, **kwargs: Any) -> Any:
        """Draw the embedding (see :func:`hyperloss.plotting.plot_embedding`).

        Parameters
        ----------
        path : str or Path
            Output image file (e.g. ``.png``).
        tree : hyperloss.trees.Tree
            Gives branch colours and parent edges.
        **kwargs
            Passed to :func:`hyperloss.plotting.plot_embedding`.
        """
        from hyperloss.plotting import plot_embedding

        return plot_embedding(self, tree, path, **kwargs)

    # --------------------------------------------------------------------- I/O
    def save(self, directory: str | Path) -> Path:
        """Write ``points.npy`` and ``embedding.json`` into ``directory`` (created if needed).

        Existing files of those two names are overwritten; nothing else in the directory is
        touched. See the module docstring for the format.

        Parameters
        ----------
        directory : str or Path

        Returns
        -------
        Path
            The directory.
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"directory {str(directory)!r} exists and is not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": "lorentz",
            "n_points": len(self),
            "dim": self.dim,
            "curvature": self.curvature,
            "names": self.names,
            "metrics": _jsonable(self.metrics),
        }
        np.save(directory / _POINTS_FILE, self.points.detach().cpu().numpy(), allow_pickle=False)
        with open(directory / _META_FILE, "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=1)
            handle.write("\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Embedding:
        """Read an embedding written by :meth:`save`.

        Parameters
        ----------
        directory : str or Path

        Returns
        -------
        Embedding

        Raises
        ------
        FileNotFoundError
            If the directory, ``points.npy`` or ``embedding.json`` is missing.
        ValueError
            If a file is unreadable or inconsistent (bad JSON, unknown format version,
            shape or name-count mismatch, points off the hyperboloid).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"embedding directory {str(directory)!r} does not exist")
        points_path, meta_path = directory / _POINTS_FILE, directory / _META_FILE
        for path in (points_path, meta_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{str(path)!r} is missing: not a saved hyperloss embedding"
                )
        try:
            with open(meta_path, encoding="utf-8") as handle:
                meta = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{str(meta_path)!r} is not valid JSON: {error}") from error
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT_NAME:
            raise ValueError(f"{str(meta_path)!r} is not a hyperloss embedding file")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{str(meta_path)!r} has format_version {version!r}; this hyperloss reads "
                f"{FORMAT_VERSION}"
            )
        for key in ("names", "curvature", "dim"):
            if key not in meta:
                raise ValueError(f"{str(meta_path)!r} lacks the key {key!r}")
        try:
            array = np.load(points_path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(
                f"{str(points_path)!r} is not a readable .npy array: {error}"
            ) from error
        if array.ndim != 2 or array.shape[1] != int(meta["dim"]) + 1:
            raise ValueError(
                f"{str(points_path)!r} has shape {array.shape}; embedding.json says dim "
                f"{meta['dim']} (expected (N, {int(meta['dim']) + 1}))"
            )
        if array.shape[0] != len(meta["names"]):
            raise ValueError(
                f"{str(points_path)!r} has {array.shape[0]} rows but embedding.json lists "
                f"{len(meta['names'])} names"
            )
        return cls(
            torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)),
            meta["names"],
            curvature=float(meta["curvature"]),
            metrics=meta.get("metrics") or {},
        )


# ---------------------------------------------------------------------- helpers
def _check_points(points: Any, curvature: float) -> torch.Tensor:
    if isinstance(points, torch.Tensor):
        tensor = points.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            tensor = torch.as_tensor(np.asarray(points, dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise TypeError(f"points must be a tensor or a numeric array: {error}") from error
    if tensor.ndim != 2 or tensor.shape[1] < 2:
        raise ValueError(
            f"points must have shape (N, dim + 1) with dim >= 1, got {tuple(tensor.shape)}"
        )
    if tensor.shape[0] == 0:
        raise ValueError("points must not be empty")
    if not all_finite(tensor):
        bad = int((~torch.isfinite(tensor)).any(dim=1).sum())
        raise ValueError(f"points has {bad} rows with non-finite coordinates")
    time = tensor[:, 0]
    if (time <= 0).any():
        raise ValueError("points must lie on the upper sheet of the hyperboloid (points[:, 0] > 0)")
    # Minkowski norm should be -1/c; compare relative to x0^2, the size of the cancelling terms.
    minkowski = -time * time + (tensor[:, 1:] * tensor[:, 1:]).sum(dim=1)
    error = (minkowski + 1.0 / curvature).abs() / torch.clamp(time * time, min=1.0)
    if (error > _ON_MANIFOLD_RTOL).any():
        worst = int(error.argmax())
        raise ValueError(
            f"points are not on the hyperboloid of curvature -{curvature:g}: row {worst} has "
            f"Minkowski norm {float(minkowski[worst]):.6g}, expected {-1.0 / curvature:.6g}"
        )
    return tensor.contiguous()


def _check_names(names: Sequence[str], n_points: int) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"names must be a sequence of str, got {type(names).__name__}")
    names = list(names)
    non_str = [n for n in names if not isinstance(n, str)]
    if non_str:
        raise TypeError(f"names must all be str, got e.g. {non_str[0]!r}")
    if len(names) != n_points:
        raise ValueError(f"names has {len(names)} entries but points has {n_points} rows")
    if len(set(names)) != len(names):
        seen: set[str] = set()
        duplicate = next(n for n in names if n in seen or seen.add(n))
        raise ValueError(f"names must be unique; {duplicate!r} repeats")
    return names


def _jsonable(value: Any) -> Any:
    """Convert tensors / numpy scalars / nested containers to plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
