"""Exact top k and ranks of a network's cell scores without scoring every cell: tile bounds.

Without the copy path, the score of cell ``c`` after token ``t`` (:func:`trajmoe.nn.ranking_scores`)
is a dot product, the cell's bias, the value of its distance bucket from the current cell and,
on the cells of the window only, the history prior::

    s(t, c) = q_t . C_c + b_c + D_t[bucket(|x_c - x_t|)]  (+ w_t . f_t(c), c in the window)

Most cells of a city are far from where a person is and score well below the best few. The
cells are grouped into square tiles of :data:`TILE_CELLS` cells a side, and every tile gets an upper bound of
its cells' scores for every token: the dot product and bias by the smaller of a ball bound
(``q . mu_T + |q| r_T``) and a box bound (``q+ . max_T + q- . min_T``) of the tile's vectors
``(C_c, b_c)``, the distance prior by the largest value of the buckets between the nearest and
the farthest point of the tile's bounding box. A tile whose bound is below the k-th best score
already found (for a rank: below the truth's score) cannot hold a cell of the top k (a cell that
ranks ahead of the truth), and is never scored. This is branch and bound over a space
partition, as in exact maximum inner-product search (Ram and Gray, "Maximum inner-product search
using cone trees", KDD 2012), with the distance prior's bound from the partition being spatial.

The search visits a block of tokens' tiles in up to three rounds: the tile of each token's truth
(for ranks: the score the other cells are counted against), the tiles of the cells of its window
(the history prior, which the bounds leave out, adds to them), then every other tile whose bound
reaches the k-th best score found so far or the truth's score.

What it returns is what scoring every cell returns (:func:`trajmoe.estimators._scoring.rank_blocks`
over :func:`trajmoe.nn.ranking_scores`, in float32): the top k with its tie rule (equal scores to
the lowest id) and pessimistic ranks, of the scores it computes. Those are the dense path's
scores up to the float32 rounding of the dot product: the same terms, buckets
(:func:`trajmoe.nn.retrieval.bucket_grid`) and additions, element by element, but a product of a
tile's few cells may round its last bit differently from the same columns of a product over
every cell (as the dense path's own scores move by an ulp between batches of other windows).
So two cells whose scores tie exactly on one path may be an ulp apart on the other, and the tie
go another way; real cells, whose coordinates differ, rarely tie (no label or rank of the
benchmark's NYC and YJMob100K city A models differs from the dense path on the same outputs). The bounds carry a margin of ``1024``
float32 epsilons of the scores' magnitude, far above the rounding of a 64-term dot product.
Outputs with a copy path, without a distance prior, or with a term that is not finite are not
searched (:func:`searchable`).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import metrics
from ..nn.retrieval import bucket_grid, history_terms, squared_buckets_
from ._scoring import SCORE_BLOCK, topk_lowest_id

__all__ = ["TILE_CELLS", "CellTiles", "SearchTokens", "searchable", "tile_rank", "rank_tokens"]

#: Side of a tile in grid cells: 16 x 16 cells, 8 km on a 500 m grid. Chosen on the small network
#: of ``benchmarks/throughput.py`` (30 test users, one thread, median of 5 calls): ``predict`` and
#: ``target_ranks`` take 0.74 / 1.17 s on YJMob100K city A with tiles of 2 km, 0.40 / 0.52 s with
#: 4 km, 0.31 / 0.35 s with 8 km and 0.32-0.33 / 0.36 s with 12-16 km (NYC: 0.17 / 0.17 s at
#: 2 km, 0.13-0.14 / 0.09-0.10 s from 6 to 16 km). Small tiles prune more cells but cost a
#: bound per tile and token and a visit (a few small tensor operations) per tile; a tile of a
#: fixed number of cells keeps a tile's score block the same on finer grids.
TILE_CELLS = 16

_MARGIN_EPS = 1024      # float epsilons of a score's magnitude added to every bound


class CellTiles:
    """The cells of one city grouped into square tiles, with what bounds their scores.

    Parameters
    ----------
    candidates : FloatTensor [N, d]
        The city's candidate vectors ``C`` (:meth:`RetrievalNetwork.city_encoding`).
    bias : FloatTensor [N] or None
        Their bias ``b`` (popularity-bin bias of the distance prior).
    metres : FloatTensor [N+1, 2]
        Cell centroids in metres (row N: the out-of-vocabulary row).
    side : float
        Side of a tile (metres): :data:`TILE_CELLS` times the grid's cell size.

    Attributes
    ----------
    order : LongTensor [N]
        Cell ids by tile, then by id.
    starts : list of int
        ``order[starts[T]:starts[T + 1]]`` are the cells of tile ``T``.
    tile_of : LongTensor [N]
        Tile of every cell id.
    position : LongTensor [N]
        Place of every cell id in ``order``.
    finite : bool
        Whether every candidate vector and bias is finite (else the tiles are not searched).
    """

    def __init__(self, candidates: torch.Tensor, bias: torch.Tensor | None, metres: torch.Tensor,
                 side: float) -> None:
        n = candidates.shape[0]
        metres = metres.to(torch.promote_types(metres.dtype, torch.float32))
        xy = metres[:n]                                   # finite (RetrievalNetwork.register_city)
        grid = torch.floor((xy - xy.min(0).values) / side).long()
        # tiles numbered by (column, row), as torch.unique(grid, dim=0) numbers them, from one
        # integer key a tile (the unique of rows is an order of magnitude slower)
        height = int(grid[:, 1].max()) + 1 if n else 1
        _, tile_of = torch.unique(grid[:, 0] * height + grid[:, 1], return_inverse=True)
        self.order = torch.argsort(tile_of * n + torch.arange(n, device=tile_of.device))
        self.tile_of = tile_of
        self.position = torch.empty_like(self.order)
        self.position[self.order] = torch.arange(n, device=self.order.device)
        counts = torch.bincount(tile_of)
        self.n_tiles = len(counts)
        self.starts = [0] + counts.cumsum(0).tolist()
        self.candidates = candidates[self.order].contiguous()
        self.bias = None if bias is None else bias[self.order].contiguous()
        self.x, self.y = xy[self.order].T.contiguous()
        self.metres = metres
        sorted_tile = tile_of[self.order]

        def per_tile(values, reduce, start):
            index = sorted_tile.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
            return values.new_full((self.n_tiles, *values.shape[1:]), start).scatter_reduce_(0, index, values, reduce)

        # the bounds of q . C_c + b_c: ball (centre and radius) and box (corners) of the vectors (C_c, b_c)
        vectors = self.candidates if bias is None else torch.cat([self.candidates, self.bias[:, None]], 1)
        self.finite = bool(torch.isfinite(vectors).all())
        self.mean = vectors.new_zeros(self.n_tiles, vectors.shape[1]).index_add_(0, sorted_tile, vectors) / counts[:, None]
        self.radius = per_tile((vectors - self.mean[sorted_tile]).norm(dim=1), "amax", 0.0)
        self.corners = torch.cat([per_tile(vectors, "amax", -torch.inf), per_tile(vectors, "amin", torch.inf)], 1).T.contiguous()
        self.largest = float(vectors.norm(dim=1).max())
        # the bounding box of the tile's centroids: x0, x1, y0, y1
        self.box = torch.stack([per_tile(self.x, "amin", torch.inf), per_tile(self.x, "amax", -torch.inf),
                                per_tile(self.y, "amin", torch.inf), per_tile(self.y, "amax", -torch.inf)], 1)

    def bounds(self, query: torch.Tensor, distance: torch.Tensor | None, here: torch.Tensor) -> torch.Tensor:
        """Upper bound of every tile's scores (without the history prior) for every token.

        Parameters
        ----------
        query : FloatTensor [n, d]
        distance : FloatTensor [n, K] or None
            Value of each distance bucket per token (a token whose position is unknown: its
            last bucket's value in every bucket).
        here : FloatTensor [n, 2]
            Current centroid per token (metres).

        Returns
        -------
        FloatTensor [n, n_tiles]
        """
        q = query if self.bias is None else torch.cat([query, query.new_ones(len(query), 1)], 1)
        ball = torch.addmm(q.norm(dim=1, keepdim=True) * self.radius, q, self.mean.T)
        box = torch.cat([q.clamp(min=0), q.clamp(max=0)], 1) @ self.corners
        bound = torch.minimum(ball, box)
        scale = q.norm(dim=1) * self.largest
        if distance is not None:
            x0, x1, y0, y1 = self.box.T
            hx, hy = here[:, :1], here[:, 1:]
            near = ((x0 - hx).clamp(min=0) + (hx - x1).clamp(min=0)).square() + \
                   ((y0 - hy).clamp(min=0) + (hy - y1).clamp(min=0)).square()
            far = torch.maximum((hx - x0).abs(), (hx - x1).abs()).square() + torch.maximum((hy - y0).abs(), (hy - y1).abs()).square()
            # the bucket function is non-decreasing: a cell's bucket lies between those of the
            # nearest and the farthest point of the box (widened by far more than their rounding)
            low = squared_buckets_(near.mul_(1 - 1e-5)).long()
            high = squared_buckets_(far.mul_(1 + 1e-5).add_(1)).long()
            bound = bound + _range_max(distance, low, high)
            scale = scale + distance.abs().max(1).values
        eps = max(torch.finfo(bound.dtype).eps, torch.finfo(torch.float32).eps)     # ranked in float32
        return bound + _MARGIN_EPS * eps * (scale[:, None] + 1)

    def scores(self, tile: int, query: torch.Tensor, distance: torch.Tensor | None, current: torch.Tensor) -> torch.Tensor:
        """Scores (without the history prior) of the cells of one tile, in ``order``: [n, m].

        ``current`` LongTensor [n]: the tokens' current cells (0..N, N out of vocabulary). Their
        distance buckets are computed once per run of equal cells (the estimators sort tokens
        by their current cell), element by element as for every token.
        """
        a, b = self.starts[tile], self.starts[tile + 1]
        cells = self.candidates[a:b].T
        s = query @ cells if self.bias is None else torch.addmm(self.bias[a:b], query, cells)
        if distance is not None:
            distinct, inverse = torch.unique_consecutive(current, return_inverse=True)
            buckets = bucket_grid(self.metres[distinct], self.x[a:b], self.y[a:b])
            s += distance.gather(1, buckets[inverse].long()).to(s.dtype)
        return s


def searchable(out: dict) -> bool:
    """Whether :func:`tile_rank` can rank a network output: no copy path (its mixture is not a sum
    of bounded terms), a distance prior (what makes distant tiles prunable) and finite terms of
    the tokens (a NaN has no bound; the dense path reports it as a diverged model). The city's
    terms are checked once per city and call: :attr:`CellTiles.finite`.

    Parameters
    ----------
    out : dict
        Output of a :class:`~trajmoe.nn.RetrievalNetwork`.

    Returns
    -------
    bool
    """
    if out.get("copy_scores") is not None or out.get("distance") is None:
        return False
    terms = (out.get(key) for key in ("query", "distance", "history", "history_returns"))
    return all(bool(torch.isfinite(term).all()) for term in terms if term is not None)


def _range_max(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``max(values[i, low[i, j]:high[i, j] + 1])``: values [n, K], low and high [n, m]."""
    k = values.shape[1]
    table = values.new_full((len(values), k, k), -torch.inf)
    for start in range(k):
        table[:, start, start:] = values[:, start:].cummax(1).values
    return table.view(len(values), k * k).gather(1, low * k + high)


class SearchTokens:
    """The terms of a network's scores that the tile search reads, for a set of tokens.

    Gathered from one network output by :meth:`of`; the tokens of several outputs of one city
    (the batches of one call) are ranked together after :meth:`concat`, so that a tile is
    visited once for all of them instead of once a batch.

    Parameters
    ----------
    query : FloatTensor [n, d]
        Query vector per token.
    current : LongTensor [n]
        Current cell per token (0..N, N out of vocabulary).
    distance : FloatTensor [n, K] or None
        Value of each distance bucket per token (a token out of the vocabulary: its last
        bucket's value in every bucket).
    entries : tuple (LongTensor [m], LongTensor [m], FloatTensor [m, F]) or None
        The history prior of the cells of each token's window: token, cell and the increments
        of its score (one column per history feature, added in that order).
    """

    def __init__(self, query, current, distance=None, entries=None):
        self.query, self.current, self.distance, self.entries = query, current, distance, entries

    def __len__(self):
        return len(self.query)

    @classmethod
    def of(cls, out: dict, rows: torch.Tensor, cols: torch.Tensor) -> "SearchTokens":
        """The tokens ``(rows, cols)`` of a network output without the copy path.

        Parameters
        ----------
        out : dict
            Output of a :class:`~trajmoe.nn.RetrievalNetwork`.
        rows, cols : LongTensor [n]
            Batch index and position of each token.

        Returns
        -------
        SearchTokens
        """
        n_cells = out["candidates"].shape[0]
        current = out["location"][rows, cols].clamp_min(0)
        distance = None
        if out.get("distance") is not None:
            # a position out of the vocabulary puts every cell in the last bucket: its value in every bucket
            distance = out["distance"][rows, cols]
            distance = torch.where((current >= n_cells)[:, None], distance[:, -1:], distance)
        entries = None
        if out.get("history") is not None:
            entry, weights, features = history_terms(out, rows, cols, n_cells)
            i, j = (entry < n_cells).nonzero(as_tuple=True)
            increments = torch.stack([weights[i, f] * feature[i, j] for f, feature in enumerate(features)], 1)
            entries = (i, entry[i, j], increments)
        return cls(out["query"][rows, cols], current, distance, entries)

    @classmethod
    def concat(cls, parts) -> "SearchTokens":
        """The tokens of ``parts`` (a list of :class:`SearchTokens` of one city), in order."""
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]]).tolist()
        entries = None
        if parts[0].entries is not None:
            entries = tuple(torch.cat(columns) for columns in zip(
                *[(p.entries[0] + offset, *p.entries[1:]) for p, offset in zip(parts, offsets)]))
        return cls(torch.cat([p.query for p in parts]), torch.cat([p.current for p in parts]),
                   None if parts[0].distance is None else torch.cat([p.distance for p in parts]), entries)

    def take(self, index: torch.Tensor) -> "SearchTokens":
        """The tokens ``index`` (LongTensor [n'], distinct), in that order."""
        entries = None
        if self.entries is not None:
            place = torch.full((len(self),), -1, dtype=torch.long, device=index.device)
            place[index] = torch.arange(len(index), device=index.device)
            token = place[self.entries[0]]
            kept = token >= 0
            entries = (token[kept], self.entries[1][kept], self.entries[2][kept])
        return SearchTokens(self.query[index], self.current[index],
                            None if self.distance is None else self.distance[index], entries)


def tile_rank(out: dict, rows: torch.Tensor, cols: torch.Tensor, tiles: CellTiles, k=None, truth=None,
              block: int = SCORE_BLOCK):
    """Top-k cells and ranks of the truth, as :func:`trajmoe.estimators._scoring.rank_blocks` gives
    them for :func:`trajmoe.nn.ranking_scores`, scoring only the tiles that can matter.

    Parameters
    ----------
    out : dict
        Output of a :class:`~trajmoe.nn.RetrievalNetwork` without the copy path.
    rows, cols : LongTensor [n]
        Batch index and position of each token.
    tiles : CellTiles
        Of the output's city (``out["candidates"]``, ``out["candidate_bias"]``,
        ``out["cell_metres"]``).
    k : int or None
        Top cells wanted per token; None: none.
    truth : ndarray of int64 of shape (n,) or None
        True next cell per token: 0..N-1, -1 out of vocabulary (rank :data:`trajmoe.metrics.OOV_RANK`),
        -2 no target (rank 0); None: no ranks.
    block : int, default :data:`~trajmoe.estimators._scoring.SCORE_BLOCK`
        Entries held at once: bounds (a token's per tile, and its table of bucket maxima), and
        scores of a tile's cells (a chunk of its tokens at a time).

    Returns
    -------
    ids : ndarray of int64 of shape (n, min(k, N)) or None
    values : ndarray of float64 of shape (n, min(k, N)) or None
        Scores of those cells (``ranking_scores``), best first.
    ranks : ndarray of int64 of shape (n,) or None
    """
    return rank_tokens(SearchTokens.of(out, rows, cols), tiles, k, truth, block)


def rank_tokens(tokens: SearchTokens, tiles: CellTiles, k=None, truth=None, block: int = SCORE_BLOCK):
    """:func:`tile_rank` of :class:`SearchTokens` (of one or several outputs of the city of ``tiles``).

    The tokens are searched in the order of their current cell (a tile's score block then holds
    few distinct current cells, whose distance buckets it computes once each); the results are
    in the order of ``tokens``. Parameters and returns are those of :func:`tile_rank`.
    """
    n, n_cells = len(tokens), tiles.candidates.shape[0]
    kk = None if k is None else min(int(k), n_cells)
    ids = None if k is None else np.zeros((n, kk), np.int64)
    values = None if k is None else np.full((n, kk), -np.inf)
    ranks = None if truth is None else np.zeros(n, np.int64)
    order = torch.argsort(tokens.current, stable=True)
    tokens = tokens.take(order)
    order = order.cpu().numpy()
    # per token: a bound per tile and a table of the distance buckets' range maxima
    k_buckets = 0 if tokens.distance is None else tokens.distance.shape[-1]
    step = max(1, block // (tiles.n_tiles + k_buckets**2))
    device = tokens.query.device
    for start in range(0, n, step):
        part = order[start:start + step]
        chunk = tokens if step >= n else tokens.take(torch.arange(start, start + len(part), device=device))
        found = _search(chunk, tiles, kk, None if truth is None else torch.as_tensor(truth[part], device=device),
                        block)
        if k is not None:
            ids[part], values[part] = found[0].cpu().numpy(), found[1].double().cpu().numpy()
        if truth is not None:
            ranks[part] = found[2].cpu().numpy()
    return ids, values, ranks


def _search(tokens, tiles, k, truth, block):
    """:func:`rank_tokens` of one block of tokens: (ids, values, ranks) as tensors (or None)."""
    n = len(tokens)
    device = tokens.query.device
    query, current, distance = tokens.query, tokens.current, tokens.distance
    here = tiles.metres[current]
    entries = ()                                      # (token, cell, increments of its score)
    if tokens.entries is not None:
        i, cell, increments = tokens.entries
        entries = (i, cell, increments.unbind(1))
    state = _Found(n, k, truth, device)
    visited = torch.zeros(n, tiles.n_tiles, dtype=torch.bool, device=device)
    rounds = []
    if truth is not None:
        # the truth's tile first: its score is what the other cells are counted against
        ranked = truth >= 0
        visited[ranked.nonzero()[:, 0], tiles.tile_of[truth[ranked]]] = True
        rounds.append(visited.clone())
    if len(entries) and len(entries[0]):
        # the tiles of the window's cells: the history prior is not in the bounds
        window = torch.zeros_like(visited)
        window[entries[0], tiles.tile_of[entries[1]]] = True
        rounds.append(window & ~visited)
        visited |= window
    for needed in rounds:
        for tile, tokens_, s in _visit(needed, tiles, query, distance, current, block, entries):
            state.add(tile, tokens_, s, tiles)
    # every other tile that could hold a cell of the top k (or one scoring at least the truth)
    threshold = state.threshold()
    bounds = tiles.bounds(query, distance, here)
    for tile, tokens_, s in _visit((bounds >= threshold[:, None]) & ~visited, tiles, query, distance, current, block):
        state.add(tile, tokens_, s, tiles)
    return state.result()


def _visit(needed, tiles, query, distance, current, block, entries=()):
    """Yield ``(tile, tokens, scores)`` for the tokens that need each tile, at most ``block``
    scores at a time; ``entries`` (token, cell, increments), the history prior of the tokens'
    window cells, is added to the scores of those of the tiles visited, as
    :func:`trajmoe.nn.loss.generation_logits` adds it. The scores are float32, as the neural
    estimators rank them (``ranking_scores(...).float()``)."""
    pairs = needed.T.nonzero()                       # (tile, token), by tile
    if not len(pairs):
        return
    tokens = pairs[:, 1]
    tile_ids, counts = torch.unique_consecutive(pairs[:, 0], return_counts=True)
    chunks = []                                      # (tile, first pair, end pair): a tile's tokens in chunks
    start = 0
    for tile, count in zip(tile_ids.tolist(), counts.tolist()):
        step = max(1, block // (tiles.starts[tile + 1] - tiles.starts[tile]))
        chunks += [(tile, a, min(a + step, start + count)) for a in range(start, start + count, step)]
        start += count
    query, current = query[tokens], current[tokens]
    distance = None if distance is None else distance[tokens]
    entry_ends = [0] * len(chunks)
    if len(entries):
        token, cell, increments = entries
        tile = tiles.tile_of[cell]
        inside = needed[token, tile]
        token, cell, tile, increments = token[inside], cell[inside], tile[inside], [v[inside] for v in increments]
        # the pair of every entry: pairs are (tile, token) in order
        pair = torch.searchsorted(pairs[:, 0] * len(needed) + pairs[:, 1], tile * len(needed) + token)
        by_pair = torch.argsort(pair, stable=True)
        pair, cell, increments = pair[by_pair], cell[by_pair], [v[by_pair] for v in increments]
        entry_ends = torch.searchsorted(pair, torch.tensor([end for *_, end in chunks], device=pair.device)).tolist()
    first_entry = 0
    for (tile, start, end), entry_end in zip(chunks, entry_ends):
        s = tiles.scores(tile, query[start:end], None if distance is None else distance[start:end], current[start:end])
        if entry_end > first_entry:
            hit = slice(first_entry, entry_end)
            i, column = pair[hit] - start, tiles.position[cell[hit]] - tiles.starts[tile]
            value = s[i, column]
            for increment in increments:                 # in _add_history's order
                value = value + increment[hit].to(s.dtype)
            s[i, column] = value
            first_entry = entry_end
        yield tile, tokens[start:end], s.float()


class _Found:
    """The best cells and the truth's counts found so far for a block of tokens."""

    def __init__(self, n, k, truth, device):
        self.n, self.k, self.device = n, k, device
        self.parts = []                                  # (tokens, values, ids) of each tile's top k
        self.truth = truth
        if truth is not None:
            self.truth_score = torch.full((n,), torch.inf, device=device)
            self.counts = torch.zeros(n, dtype=torch.long, device=device)

    def add(self, tile, tokens, s, tiles):
        """Take the scores ``s`` [len(tokens), m] of the cells of ``tile`` for ``tokens``."""
        a = tiles.starts[tile]
        if self.k is not None:
            v, local = topk_lowest_id(s, self.k)            # cells of a tile are in id order
            self.parts.append((tokens, v, tiles.order[a + local]))
        if self.truth is not None:
            t = self.truth[tokens]
            here = (t >= 0) & (tiles.tile_of[t.clamp_min(0)] == tile)
            if bool(here.any()):                            # the truth's tile: visited first
                i = here.nonzero()[:, 0]
                self.truth_score[tokens[i]] = s[i, tiles.position[t[i]] - a]
            self.counts.index_add_(0, tokens, (s >= self.truth_score[tokens, None]).sum(1))

    def _merged(self):
        """(values [n, k], ids [n, k]) of the best cells found, -inf / -1 where fewer."""
        tokens = torch.cat([t.repeat_interleave(v.shape[1]) for t, v, _ in self.parts])
        v = torch.cat([v.reshape(-1) for _, v, _ in self.parts])
        ids = torch.cat([i.reshape(-1) for _, _, i in self.parts])
        order = torch.argsort(ids, stable=True)
        order = order[torch.argsort(v[order], descending=True, stable=True)]
        order = order[torch.argsort(tokens[order], stable=True)]         # token, score down, id up
        tokens, v, ids = tokens[order], v[order], ids[order]
        starts = torch.searchsorted(tokens, torch.arange(self.n, device=self.device))
        place = torch.arange(len(tokens), device=self.device) - starts[tokens]
        keep = place < self.k
        values = torch.full((self.n, self.k), -torch.inf, dtype=v.dtype, device=self.device)
        found = torch.full((self.n, self.k), -1, dtype=torch.long, device=self.device)
        tokens, place, v, ids = tokens[keep], place[keep], v[keep], ids[keep]
        values[tokens, place] = v
        found[tokens, place] = ids
        self.parts = [(tokens, v[:, None], ids[:, None])]     # what the next round competes with
        return values, found

    def threshold(self):
        """Per token, the lowest score a cell must reach to matter: the k-th best found (-inf
        while fewer than k are found), or the truth's score, whichever is lower; +inf where
        neither is wanted."""
        threshold = torch.full((self.n,), torch.inf, device=self.device)
        if self.k is not None:
            threshold = self._merged()[0][:, -1] if self.parts else threshold.fill_(-torch.inf)
        if self.truth is not None:
            threshold = torch.minimum(threshold, torch.where(self.truth >= 0, self.truth_score, torch.inf))
        return threshold

    def result(self):
        """(ids [n, k], values [n, k]) or Nones, ranks [n] or None."""
        ids = values = ranks = None
        if self.k is not None:
            values, ids = self._merged()
        if self.truth is not None:
            ranks = torch.where(self.truth >= 0, self.counts, 0)
            ranks[self.truth == -1] = metrics.OOV_RANK
        return ids, values, ranks
