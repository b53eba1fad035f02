"""Encoders: train a model that maps node features to the hyperboloid, with fit's losses.

A free embedding (:func:`hyperloss.training.fit` without an encoder) learns one point per node
and cannot place a node it has never seen. An *encoder* is any ``torch.nn.Module`` that maps
a node's features to a point, so it can embed new nodes from their features alone. Pass one
to :func:`~hyperloss.training.fit`::

    text = text_features(titles, fit_on=train_index)        # (N, F) scipy CSR, TF-IDF
    votes = neighbour_features(text, train_index)            # (N, M): similar training titles
    encoder = HyperbolicEncoder(votes.shape[1], dim=10, hidden=())
    embedding = fit(tree, 10, encoder=encoder, features=votes, train_nodes=train_index)
    new_votes = neighbour_features(new_text, text[train_index])   # votes of unseen titles
    new_points = encoder.points(new_votes)                       # (K, 11) Lorentz points

Two ways to read text, measured on NAICS with 10% of the codes held out (the evidence table
in :mod:`hyperloss.training`, ``benchmarks/ablation.py``):

- *neighbour votes* (recommended): :func:`neighbour_features` turns each title into a soft
  vote for its most similar training titles, and a linear encoder learns one tangent vector
  per training node; a node, seen or not, lands at the vote-weighted mean of its neighbours'
  vectors. Training nodes are placed almost as freely as free points, and a held-out code
  lands among the codes whose titles it shares words with.
- *an MLP on the TF-IDF vectors* (``HyperbolicEncoder(F, dim)``): smooth in the n-grams, but
  it fits the training codes less well and a held-out title with unfamiliar words drifts
  toward the other uncertain ones.

The contract
------------
``features`` is an ``(N, F)`` float tensor (dense) or a scipy.sparse matrix, in tree index
order (row ``i`` describes ``tree.names[i]``). ``encoder(rows)`` receives the rows of a batch
(a dense float64 tensor ``(M, F)``, or a float64 ``torch.sparse_csr_tensor`` for scipy.sparse
features) and
returns ``(M, dim)`` **tangent vectors at the origin**; fit maps them to the hyperboloid with
:func:`hyperloss.geometry.expmap0` (which is why the output is a tangent vector and not a
point: any Euclidean head works unchanged, ``|v|`` is the hyperbolic radius, and the same
output read as Euclidean points gives the Euclidean ablation of ``benchmarks/ablation.py``).

What fit does with an encoder
-----------------------------
The losses, the sampler and the schedule are the free embedding's; the defaults are those of
a start from random points (the encoder's initial output is one), with Adam's step 0.1. The
losses index points by tree index (``points[anchors]``, ...); with an encoder that table is
:class:`_EncoderRows`: ``table[index] = expmap0(encoder(features[index]))``, evaluated for the
distinct indices of a step only (``O(batch)`` per step, whatever N). The encoder's parameters
are Euclidean and go to ``torch.optim.Adam``; free points keep
:class:`~hyperloss.optim.TangentRiemannianAdam`. ``init`` does not apply (the start is the
encoder's initial output). The module is trained in place and left in ``eval()`` mode holding
the returned (best) state.

Held-out nodes: ``fit(..., train_nodes=index)`` draws anchors, positives, negatives and node
blocks from ``index`` only (:class:`hyperloss.sampling.ListSampler` with ``nodes=``) and
monitors (and so selects the best state) on those nodes only
(:func:`hyperloss.metrics.subset_monitor`): the other nodes take no part in training or model
selection, and their points come from their features alone.

Text features: :class:`TextFeatures` (scikit-learn's ``TfidfVectorizer`` on character n-grams
inside word boundaries; no model download), fit on the training titles only when nodes are
held out, so that nothing of a held-out title enters the vocabulary or the idf weights.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hyperloss.geometry import expmap0
from hyperloss.validation import check_curvature, check_int, check_positive

__all__ = ["HyperbolicEncoder", "TextFeatures", "neighbour_features", "text_features"]

# Rows per block when all N points are computed (evaluation): bounded memory on huge trees.
_POINT_CHUNK = 4096
# Similarity entries per block in neighbour_features (rows x references): 32 MiB of float64.
_SIMILARITY_BLOCK = 2**22


class HyperbolicEncoder(nn.Module):
    """A float64 MLP from node features to tangent vectors at the origin of the hyperboloid.

    ``features -> Linear -> tanh -> ... -> Linear -> v (dim,)``; :meth:`points` adds
    ``expmap0``. The first layer also accepts sparse input: a ``torch.sparse_csr_tensor`` (what
    fit passes for scipy.sparse features; computed with ``embedding_bag``) or a COO tensor.

    Parameters
    ----------
    in_features : int
        ``F``, the width of the features.
    dim : int
        Dimension of the hyperbolic space (the output width).
    hidden : sequence of int, default (256,)
        Widths of the hidden layers (empty: a linear map).
    curvature : float, default 1.0
        Used by :meth:`points`; fit must be given the same curvature.
    dropout : float, default 0.0
        Dropout on the hidden activations during training (a regulariser for held-out
        nodes; fit seeds it and saves its generator state in checkpoints).
    seed : int, default 0
        Seeds the initial weights (PyTorch's default initialisation, drawn from a private
        generator so that the global RNG is left alone and the same seed gives the same
        encoder).

    Examples
    --------
    >>> encoder = HyperbolicEncoder(5, 2, hidden=(8,))
    >>> x = torch.ones(3, 5, dtype=torch.float64)
    >>> encoder(x).shape, encoder.points(x).shape
    (torch.Size([3, 2]), torch.Size([3, 3]))
    """

    def __init__(
        self,
        in_features: int,
        dim: int,
        hidden: Sequence[int] = (256,),
        *,
        curvature: float = 1.0,
        dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a number in [0, 1), got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.in_features = check_int(in_features, "in_features", minimum=1)
        self.dim = check_int(dim, "dim", minimum=1)
        if isinstance(hidden, int) or not all(isinstance(h, int) for h in hidden):
            raise TypeError(f"hidden must be a sequence of ints, got {hidden!r}")
        self.hidden = tuple(check_int(h, "hidden width", minimum=1) for h in hidden)
        self.curvature = check_curvature(curvature)
        widths = (self.in_features, *self.hidden, self.dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(check_int(seed, "seed", minimum=None))
            layers = [
                nn.Linear(a, b, dtype=torch.float64)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            ]
        # The first layer's weight is kept transposed, (F, width): a row per feature, as
        # embedding_bag reads it for sparse input (a transposed view made it ~10x slower).
        self.input_weight = nn.Parameter(layers[0].weight.detach().t().contiguous())
        self.input_bias = nn.Parameter(layers[0].bias.detach().clone())
        self.layers = nn.ModuleList(layers[1:])

    def forward(self, features: Tensor) -> Tensor:
        """Tangent vectors ``(M, dim)`` of feature rows ``(M, in_features)`` (dense or sparse)."""
        if features.layout == torch.sparse_csr:
            # x @ W^T as a weighted sum of W's columns over each row's non-zeros:
            # embedding_bag is much faster than a sparse matmul, forward and backward.
            x = nn.functional.embedding_bag(
                features.col_indices(),
                self.input_weight,
                features.crow_indices()[:-1],
                mode="sum",
                per_sample_weights=features.values(),
            )
        elif features.is_sparse:
            x = torch.sparse.mm(features, self.input_weight)
        else:
            x = features @ self.input_weight
        x = x + self.input_bias
        for layer in self.layers:
            x = nn.functional.dropout(torch.tanh(x), self.dropout, self.training)
            x = layer(x)
        return x

    def points(self, features: Any) -> Tensor:
        """Lorentz points ``(M, dim + 1)`` of feature rows (a tensor or scipy.sparse matrix)."""
        rows = _FeatureRows(features, "features")
        return expmap0(self(rows.take(torch.arange(len(rows)))), curvature=self.curvature)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, dim={self.dim}, hidden={self.hidden}"


class TextFeatures:
    """TF-IDF vectors of short texts (titles) from character n-grams, via scikit-learn.

    ``TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, sublinear_tf=True)``:
    character n-grams inside word boundaries, so "Farming" and "Farms" share "far", "arm";
    rows L2-normalised (their dot product is the cosine similarity). Nothing is downloaded.

    Parameters
    ----------
    ngram_range : (int, int), default (2, 4)
    min_df : int, default 1
        Drop n-grams seen in fewer training texts.
    words : bool, default True
        Also add word unigrams and bigrams (a second vectorizer, its block scaled by
        ``word_weight`` before the row normalisation).
    word_weight : float, default 1.0

    Examples
    --------
    >>> text = TextFeatures().fit(["Soybean Farming", "Wheat Farming"])
    >>> x = text.transform(["Soybean Farming", "Corn Farming"])
    >>> x.shape[0], round(float(x[0].multiply(x[0]).sum()), 6)
    (2, 1.0)
    """

    def __init__(
        self,
        *,
        ngram_range: tuple[int, int] = (2, 4),
        min_df: int = 1,
        words: bool = True,
        word_weight: float = 1.0,
    ) -> None:
        try:
            from sklearn.feature_extraction.text import TfidfVectorizer
        except ImportError as error:  # pragma: no cover - scikit-learn is a dependency
            raise ImportError(
                "TextFeatures needs scikit-learn: pip install scikit-learn"
            ) from error
        self.ngram_range = tuple(ngram_range)
        self.words = bool(words)
        self.word_weight = float(word_weight)
        self._chars = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=self.ngram_range,
            min_df=min_df,
            sublinear_tf=True,
            dtype=np.float64,
        )
        self._words = TfidfVectorizer(
            analyzer="word", ngram_range=(1, 2), sublinear_tf=True, dtype=np.float64
        )
        self._fitted = False

    def fit(self, texts: Sequence[str]) -> TextFeatures:
        """Learn the vocabulary and idf weights from ``texts``; returns self."""
        texts = _check_texts(texts)
        self._chars.fit(texts)
        if self.words:
            self._words.fit(texts)
        self._fitted = True
        return self

    def transform(self, texts: Sequence[str]) -> Any:
        """``(len(texts), F)`` scipy.sparse CSR float64, rows of unit L2 norm (or zero)."""
        if not self._fitted:
            raise RuntimeError("TextFeatures.transform called before fit")
        import scipy.sparse as sp
        from sklearn.preprocessing import normalize

        texts = _check_texts(texts)
        blocks = [self._chars.transform(texts)]
        if self.words:
            blocks.append(self._words.transform(texts) * self.word_weight)
        return normalize(sp.hstack(blocks, format="csr"), norm="l2")

    @property
    def n_features(self) -> int:
        """``F``: the width of :meth:`transform`'s output."""
        if not self._fitted:
            raise RuntimeError("TextFeatures.n_features read before fit")
        width = len(self._chars.vocabulary_)
        return width + (len(self._words.vocabulary_) if self.words else 0)


def text_features(texts: Sequence[str], *, fit_on: Any = None, **options: Any) -> Any:
    """TF-IDF features of every text, learnt from some of them (:class:`TextFeatures`).

    Parameters
    ----------
    texts : sequence of str, length N
        E.g. ``[tree.title(name) for name in tree.names]``.
    fit_on : LongTensor or int array, optional
        Indices of the texts the vocabulary and idf weights are learnt from (the training
        nodes when some are held out); default all.
    **options
        Passed to :class:`TextFeatures`.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (N, F)

    Examples
    --------
    >>> x = text_features(["Soybean Farming", "Wheat Farming", "Banking"], fit_on=[0, 1])
    >>> x.shape[0]
    3
    """
    texts = _check_texts(texts)
    fitted_on = texts
    if fit_on is not None:
        fitted_on = [texts[i] for i in _row_index(fit_on, "fit_on", len(texts))]
    return TextFeatures(**options).fit(fitted_on).transform(texts)


def neighbour_features(
    features: Any, reference: Any = None, *, k: int = 10, temperature: float = 0.1
) -> Any:
    r"""Each row as a soft vote for its ``k`` most similar reference rows.

    Row ``i`` of the result has one non-zero per neighbour: the ``k`` reference rows ``j``
    with the largest cosine similarity :math:`s_{ij} > 0` to row ``i``, weighted

    .. math:: w_{ij} = \frac{\exp(s_{ij} / T)}{\sum_{j' \in \mathrm{top}_k(i)}
              \exp(s_{ij'} / T)},

    so a row sums to 1 (or is empty when no reference row shares a feature with it: such a row
    says nothing about where the node belongs). A linear encoder on these features
    (``HyperbolicEncoder(len(reference), dim, hidden=())``) learns one tangent vector per
    reference node, and places any node, seen or not, at the weighted mean of its neighbours'
    vectors: for NAICS titles held out from training this generalises much better than an MLP
    on the TF-IDF vectors themselves (evidence in :mod:`hyperloss.training`). A reference row
    is its own nearest neighbour (similarity 1), so a training node's point is mostly its own
    vector.

    Parameters
    ----------
    features : Tensor, ndarray or scipy.sparse matrix, shape (N, F)
        E.g. :func:`text_features`. Rows are compared by cosine similarity (each is scaled to
        unit L2 norm first; an all-zero row has similarity 0 to everything).
    reference : LongTensor or int array (M,), or a matrix (M, F), optional
        The rows to vote for: indices of rows of ``features`` (the training nodes when some
        are held out, so that a held-out node is placed from training nodes only), or the
        reference rows themselves (a float tensor, ndarray or scipy.sparse matrix with the
        columns of ``features``: votes of new rows for the rows an encoder was trained on).
        Default: all ``N`` rows.
    k : int, default 10
        Neighbours per row (at most ``M``). Ties at the ``k``-th place are broken
        deterministically but arbitrarily.
    temperature : float, default 0.1
        ``T`` above: lower concentrates the weight on the nearest neighbour.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (N, M), float64
        Column ``j`` stands for reference row ``j`` (row ``reference[j]`` of ``features``).

    Notes
    -----
    Cost: every row is compared with every reference row, ``O(N * M)`` similarities, computed
    in blocks of rows so that memory stays ``O(block * M)`` (a few tens of MiB); the result has
    at most ``N * k`` non-zeros. NAICS (2,126 x 1,914): 0.3 s. ICD-10-CM titles (98,506 x
    88,655 training codes, 180 n-grams a title) take about 10 ms a row on one core, some 17 min
    in all (measured on 2,000 rows): an exact search; past that size an approximate
    nearest-neighbour index would be the tool.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> w = neighbour_features(x, [0, 2], k=2)
    >>> w.shape, np.round(w.toarray(), 3).tolist()
    ((3, 2), [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    """
    import scipy.sparse as sp

    matrix = _unit_rows(features, "features")
    n_rows = matrix.shape[0]
    if _is_reference_matrix(reference):
        keys = _unit_rows(reference, "reference")
        if keys.shape[1] != matrix.shape[1]:
            raise ValueError(
                f"reference rows must have the {matrix.shape[1]} columns of features, got "
                f"{keys.shape[1]}"
            )
        if keys.shape[0] == 0:
            raise ValueError("reference must hold at least one row")
    else:
        index = np.arange(n_rows) if reference is None else _check_reference(reference, n_rows)
        keys = matrix[index]
    k = check_int(k, "k", minimum=1)
    temperature = check_positive(temperature, "temperature")
    keys_t = keys.T.tocsc() if sp.issparse(keys) else keys.T
    n_keys = keys.shape[0]
    k = min(k, n_keys)
    block = max(1, _SIMILARITY_BLOCK // n_keys)
    columns, weights, counts = [], [], []
    for start in range(0, n_rows, block):
        similarity = matrix[start : start + block] @ keys_t
        similarity = similarity.toarray() if sp.issparse(similarity) else np.asarray(similarity)
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        top_similarity = np.take_along_axis(similarity, top, axis=1)
        # Nearest first, then by reference position: the same order whatever argpartition did.
        order = np.lexsort((top, -top_similarity), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        top_similarity = np.take_along_axis(top_similarity, order, axis=1)
        keep = top_similarity > 0
        # Softmax over the kept neighbours, shifted by the row maximum (the first) for range.
        scaled = np.where(keep, (top_similarity - top_similarity[:, :1]) / temperature, -np.inf)
        exponent = np.exp(scaled)
        total = exponent.sum(axis=1, keepdims=True)
        row_weights = np.divide(exponent, total, out=np.zeros_like(exponent), where=total > 0)
        columns.append(top[keep])
        weights.append(row_weights[keep])
        counts.append(keep.sum(axis=1))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    return sp.csr_matrix(
        (np.concatenate(weights), np.concatenate(columns), indptr), shape=(n_rows, n_keys)
    )


# ------------------------------------------------------------------------------ fit's helpers
class _FeatureRows:
    """Row access to dense or scipy.sparse features: ``take(index)`` gives a float64 tensor
    (dense) or a ``torch.sparse_csr_tensor`` of the rows."""

    def __init__(self, features: Any, name: str) -> None:
        self.sparse = _is_scipy_sparse(features)
        if self.sparse:
            matrix = features.tocsr()
            if matrix.ndim != 2:
                raise ValueError(f"{name} must be 2-D (N, F), got {matrix.shape}")
            self.matrix = matrix.astype(np.float64)
            if not np.isfinite(self.matrix.data).all():
                raise ValueError(f"{name} must be finite, found nan or inf")
            self.shape = tuple(matrix.shape)
            return
        if isinstance(features, np.ndarray):
            features = torch.from_numpy(features)
        if not isinstance(features, Tensor):
            raise TypeError(
                f"{name} must be a float tensor (N, F) or a scipy.sparse matrix, got "
                f"{type(features).__name__}"
            )
        if not features.dtype.is_floating_point or features.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D float tensor (N, F), got dtype {features.dtype} and shape "
                f"{tuple(features.shape)}"
            )
        if not bool(torch.isfinite(features).all()):
            raise ValueError(f"{name} must be finite, found nan or inf")
        self.tensor = features.detach().to(torch.float64)
        self.shape = tuple(features.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, index: Tensor) -> Tensor:
        if not self.sparse:
            return self.tensor[index]
        rows = self.matrix[index.numpy()]
        with warnings.catch_warnings():
            # torch flags sparse CSR as beta; the layout has been stable since 2.0.
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.from_numpy(rows.indptr.astype(np.int64)),
                torch.from_numpy(rows.indices.astype(np.int64)),
                torch.from_numpy(rows.data),
                rows.shape,
                check_invariants=False,  # scipy's CSR is valid by construction
            )

    def digest(self) -> str:
        import hashlib

        digest = hashlib.sha256(str(self.shape).encode())
        if self.sparse:
            for part in (self.matrix.data, self.matrix.indices, self.matrix.indptr):
                digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(self.tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


class _EncoderRows:
    """What the losses index during an encoder run: ``table[index]`` are the Lorentz points
    ``expmap0(encoder(features[index]))`` of a LongTensor of tree indices, any shape.

    The encoder runs once per distinct index of the call (``torch.unique``), and the result
    is gathered back to ``index.shape + (dim + 1,)``: a step costs ``O(batch)``, not ``O(N)``.
    ``lorentz=False`` returns the encoder's output itself (Euclidean points, ``(..., dim)``;
    the ablation's Euclidean baseline).
    """

    def __init__(
        self,
        encoder: nn.Module,
        features: _FeatureRows,
        dim: int,
        curvature: float,
        *,
        lorentz: bool = True,
    ) -> None:
        self.encoder = encoder
        self.features = features
        self.dim = dim
        self.curvature = curvature
        self.lorentz = lorentz

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: Tensor) -> Tensor:
        unique, inverse = torch.unique(index.reshape(-1), return_inverse=True)
        points = self.encode(unique)
        return points[inverse].reshape(*index.shape, points.shape[-1])

    def encode(self, index: Tensor) -> Tensor:
        """Points of the 1-D LongTensor ``index`` (one encoder call)."""
        tangent = self.encoder(self.features.take(index))
        expected = (index.numel(), self.dim)
        if not isinstance(tangent, Tensor) or tuple(tangent.shape) != expected:
            shape = tuple(tangent.shape) if isinstance(tangent, Tensor) else type(tangent).__name__
            raise ValueError(
                f"encoder must map {index.numel()} feature rows to tangent vectors of shape "
                f"{expected} (M, dim), got {shape}"
            )
        if tangent.dtype != torch.float64:
            tangent = tangent.to(torch.float64)
        if not self.lorentz:
            return tangent
        return expmap0(tangent, curvature=self.curvature)

    def all_points(self) -> Tensor:
        """Every node's point ``(N, dim + 1)`` (or ``(N, dim)``), in blocks, without autograd."""
        with torch.no_grad():
            blocks = [
                self.encode(torch.arange(start, min(start + _POINT_CHUNK, len(self))))
                for start in range(0, len(self), _POINT_CHUNK)
            ]
        return torch.cat(blocks)


class _StepRows:
    """The points of a fixed set of indices, computed once: a step's table.

    The losses of one step index the table separately (the lists, then each block loss);
    encoding the union of their indices in one encoder call avoids running the encoder (and
    its backward) once per loss. ``table[index]`` must only ask for indices of the set.
    """

    def __init__(self, rows: _EncoderRows, needed: Tensor) -> None:
        self.index = torch.unique(needed)  # sorted
        self.points = rows.encode(self.index)

    def __getitem__(self, index: Tensor) -> Tensor:
        position = torch.searchsorted(self.index, index.reshape(-1))
        return self.points[position].reshape(*index.shape, self.points.shape[-1])


def check_encoder_inputs(
    encoder: Any, features: Any, train_nodes: Any, n_nodes: int
) -> tuple[nn.Module | None, _FeatureRows | None, Tensor | None]:
    """fit's checks of ``encoder``, ``features`` and ``train_nodes`` (private to the package)."""
    rows = None
    if encoder is None:
        if features is not None:
            raise ValueError("features were given without an encoder; pass encoder= as well")
    else:
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
        if not any(p.requires_grad for p in encoder.parameters()):
            raise ValueError("encoder has no trainable parameters")
        if features is None:
            raise ValueError("encoder needs features: an (N, F) tensor or scipy.sparse matrix")
        rows = _FeatureRows(features, "features")
        if len(rows) != n_nodes:
            raise ValueError(
                f"features must have one row per tree node: the tree has {n_nodes} nodes, "
                f"features has {len(rows)} rows"
            )
    nodes = None
    if train_nodes is not None:
        if isinstance(train_nodes, np.ndarray):
            train_nodes = torch.from_numpy(train_nodes)
        if not isinstance(train_nodes, Tensor) or train_nodes.dtype != torch.long:
            raise TypeError("train_nodes must be a LongTensor of tree indices")
        if train_nodes.ndim != 1:
            raise ValueError(f"train_nodes must be 1-D, got shape {tuple(train_nodes.shape)}")
        if train_nodes.numel() and (train_nodes.min() < 0 or train_nodes.max() >= n_nodes):
            raise ValueError(f"train_nodes must be tree indices in [0, {n_nodes})")
        nodes = torch.unique(train_nodes)
        if nodes.numel() != train_nodes.numel():
            raise ValueError("train_nodes must not repeat an index")
        if nodes.numel() < 2:
            raise ValueError(f"train_nodes must hold at least 2 nodes, got {nodes.numel()}")
    return encoder, rows, nodes


def holdout_split(n_nodes: int, fraction: float, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A seeded split of the non-root nodes: ``(train, held_out)`` sorted LongTensors.

    ``round(fraction * (N - 1))`` nodes are held out, drawn uniformly from ``1 .. N - 1``;
    the root (index 0) always trains (it is every node's ancestor and has no text of its own
    worth generalising from). Held-out nodes may be internal nodes.

    Raises
    ------
    ValueError
        If ``fraction`` is not in ``(0, 1)``, or it would hold out no node or leave fewer than 2
        training nodes.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"holdout must be a number in (0, 1), got {type(fraction).__name__}")
    if not (0.0 < fraction < 1.0) or math.isnan(fraction):
        raise ValueError(f"holdout must be in (0, 1), got {fraction}")
    n_held = round(fraction * (n_nodes - 1))
    if n_held < 1 or n_nodes - n_held < 2:
        raise ValueError(
            f"holdout={fraction:g} of {n_nodes - 1} non-root nodes holds out {n_held}; it must "
            "hold out at least 1 and leave at least 2 training nodes"
        )
    generator = torch.Generator().manual_seed(seed)
    held = torch.sort(1 + torch.randperm(n_nodes - 1, generator=generator)[:n_held]).values
    mask = torch.ones(n_nodes, dtype=torch.bool)
    mask[held] = False
    return torch.nonzero(mask).flatten(), held


def _unit_rows(features: Any, name: str) -> Any:
    """Checked features as a float64 scipy CSR matrix or ndarray, rows scaled to unit norm."""
    from sklearn.preprocessing import normalize

    rows = _FeatureRows(features, name)
    return normalize(rows.matrix if rows.sparse else rows.tensor.numpy(), norm="l2")


def _is_reference_matrix(reference: Any) -> bool:
    """A matrix of reference rows (2-D floats or scipy.sparse), not indices."""
    if _is_scipy_sparse(reference):
        return True
    if isinstance(reference, (Tensor, np.ndarray)):
        floating = (
            reference.dtype.is_floating_point
            if isinstance(reference, Tensor)
            else reference.dtype.kind == "f"
        )
        return floating and reference.ndim == 2
    return False


def _check_reference(reference: Any, n_rows: int) -> np.ndarray:
    """``reference`` as a non-empty int64 array of distinct row indices in ``[0, n_rows)``."""
    index = _row_index(reference, "reference", n_rows)
    if np.unique(index).size != index.size:
        raise ValueError("reference must not repeat a row index")
    return index


def _row_index(value: Any, name: str, n_rows: int) -> np.ndarray:
    """Row indices (a tensor, array or sequence of ints) as a non-empty 1-D int64 array in
    ``[0, n_rows)``; floats and bools are refused, not truncated."""
    if isinstance(value, Tensor):
        if value.dtype.is_floating_point or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer row indices, got dtype {value.dtype}")
        value = value.detach().cpu().numpy()
    index = np.asarray(value)
    if index.size == 0:
        raise ValueError(f"{name} must hold at least one row index")
    if index.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer row indices, got dtype {index.dtype}")
    if index.ndim > 1:
        raise ValueError(f"{name} must be 1-D (M,)")
    index = index.astype(np.int64).reshape(-1)
    if index.min() < 0 or index.max() >= n_rows:
        raise ValueError(f"{name} must be row indices in [0, {n_rows})")
    return index


def _is_scipy_sparse(value: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return sp.issparse(value)


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError("texts must be a sequence of strings")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
    if not texts:
        raise ValueError("texts must not be empty")
    return texts
