r"""ConFEDE's objective (Yang et al., 2023) as a recipe: :func:`confede`, its contrastive term
:func:`confede_contrastive` and its sample selector :class:`ConFEDESampler`, as ConFEDE's public
MOSI code trains it (XpastaX/ConFEDE: ``model/net/constrastive/TVA_fusion.py``,
``dataloader/MOSI.py``, ``train/constrastive/TVA_fusion_train.py``).

.. math::

    L = \mathrm{MSE}(y^*, y) + 0.1\, L_{CL} + 0.01\, \mathrm{MSE}(u^*, y)

Each anchor of a batch brings six samples that the selector retrieved for it from the training
split (two "similar-similar", two "dissimilar-dissimilar", two "similar-dissimilar"); both MSEs
run over the anchors **and** their retrieved samples, and the contrastive term over each
anchor's block of 7 samples x 6 features.

The batch layout (every recipe documents it; this one reads it): ``targets["num_anchors"] = B``
and the batch holds :math:`7B` rows, the :math:`B` anchors first, then the six samples of anchor
:math:`b` at rows :math:`B + 6b, \dots, B + 6b + 5` in the selector's order. Without
``num_anchors`` (evaluation) every row is an anchor and the contrastive term is 0, as in
ConFEDE's evaluation. The other recipes read the anchors only.

What it reads (:data:`REQUIREMENTS`): ``outputs["prediction"]`` ``[R]``, ``outputs["features"]``
(``{T_s, T_d, A_s, A_d, V_s, V_d: [R, D]}``), ``outputs["unimodal"]`` (the shared unimodal
head's prediction of each feature, ``{feature: [R]}``), ``targets["M"]`` ``[R]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mtobjectives._batch import _features, _prediction_and_label
from mtobjectives._validation import check_floating, check_int, check_positive, check_shape
from mtobjectives.functional import multi_nt_xent
from mtobjectives.objective import NUM_ANCHORS, MultiTaskObjective
from mtobjectives.recipes._requirements import Requirements

__all__ = ["KINDS", "REQUIREMENTS", "ConFEDESampler", "confede", "confede_contrastive",
           "confede_prediction_loss", "confede_unimodal_loss"]

#: What the ConFEDE recipe reads.
REQUIREMENTS = Requirements(
    "confede",
    outputs={"prediction": "the fused prediction of every row [R]",
             "features": "the decomposed features of every row, {feature: [R, D]}",
             "unimodal": "the unimodal head's prediction of each feature, {feature: [R]}"},
    targets={"M": "the multimodal label of every row [R]"},
    optional_targets={NUM_ANCHORS: "B, the anchors; the other 6B rows are retrieved samples"},
)

#: The selector's kinds, in the order of the six samples it hands out per anchor (2 each).
KINDS: tuple[str, ...] = ("similar-similar", "dissimilar-dissimilar", "similar-dissimilar")
SAMPLES_PER_ANCHOR = 6
# ConFEDE's block: 6 features x 7 samples (anchor, then its 6), row = 7 * kind + sample.
_BLOCK_FEATURES = ("T_s", "V_s", "A_s", "T_d", "V_d", "A_d")
# The positive pairs (anchor row, positive row): the anchor's T_s, V_s, A_s (rows 0, 7, 14) with
# those of its two similar-similar samples (samples 1, 2), then in each sample j, T_s with V_s
# and with A_s. The negatives belong to the pair's first row.
_POSITIVES: tuple[tuple[int, int], ...] = (
    *((7 * kind, 7 * kind + sample) for kind in range(3) for sample in (1, 2)),
    *((j, 7 * kind + j) for j in range(7) for kind in (1, 2)),
)
_NEGATIVES: dict[int, tuple[int, ...]] = {
    0: (3, 4, 5, 6, 21, 28, 35),  # T_s of the 4 other samples; the anchor's T_d, V_d, A_d
    7: (10, 11, 12, 13),  # V_s of the 4 other samples
    14: (17, 18, 19, 20),  # A_s of the 4 other samples
    **{j: (21 + j, 28 + j, 35 + j) for j in range(1, 7)},  # sample j: its own T_d, V_d, A_d
}


def confede_contrastive(features: Mapping[str, Tensor], num_anchors: int, *,
                        temperature: float = 0.5) -> Tensor:
    r"""ConFEDE's contrastive term: NT-Xent over each anchor's block, one positive per term.

    For anchor :math:`b`, the block holds the features :math:`T_s, V_s, A_s, T_d, V_d, A_d` of
    the anchor and its six retrieved samples (42 vectors). The 20 positive pairs are those of
    ConFEDE's index tuple: the anchor's :math:`T_s`, :math:`V_s` and :math:`A_s` with those of
    its two similar-similar samples, and within each of the 7 samples, :math:`T_s` with
    :math:`V_s` and with :math:`A_s`. The negatives of a pair are those of its first element:
    for the anchor's :math:`T_s` the :math:`T_s` of the four other samples and the anchor's own
    :math:`T_d, V_d, A_d`; for its :math:`V_s` (:math:`A_s`) the other samples' :math:`V_s`
    (:math:`A_s`); for a retrieved sample's :math:`T_s` its own :math:`T_d, V_d, A_d`. Each
    pair's loss is NT-Xent with one positive (pytorch-metric-learning's ``NTXentLoss`` over an
    index tuple, as ConFEDE's ``cont_NTXentLoss``),

    .. math::

        \ell(a, p) = -\log \frac{\exp(s_{ap}/\tau)}
                     {\exp(s_{ap}/\tau) + \sum_{n \in N(a)} \exp(s_{an}/\tau)}

    with cosine similarity :math:`s`; the term is the mean over the 20 pairs, then over the
    anchors. (ConFEDE adds the float32 ``tiny`` inside the logarithm, which changes nothing
    above 1e-30.)

    Args:
        features: the six features of every row, ``[7B, D]`` each, in the batch layout of the
            module docstring.
        num_anchors: :math:`B`.
        temperature: :math:`\tau` (ConFEDE: 0.5).

    Returns:
        A 0-d tensor.
    """
    missing = [f for f in _BLOCK_FEATURES if f not in features]
    if missing:
        raise ValueError(f"ConFEDE's contrastive term needs the six features "
                         f"{list(_BLOCK_FEATURES)}; outputs['features'] lacks {missing}")
    rows = features["T_s"].shape[0]
    b = num_anchors
    if rows != (1 + SAMPLES_PER_ANCHOR) * b:
        raise ValueError(f"ConFEDE's batch holds its {b} anchors and {SAMPLES_PER_ANCHOR} "
                         f"retrieved samples per anchor, {7 * b} rows; got {rows} rows")
    order = torch.cat([torch.arange(b).unsqueeze(1),
                       b + torch.arange(6 * b).view(b, 6)], dim=1).to(features["T_s"].device)
    block = torch.stack([features[f][order] for f in _BLOCK_FEATURES], dim=1)  # [B, 6, 7, D]
    block = block.flatten(1, 2)  # [B, 42, D], row = 7 * kind + sample
    anchors = torch.tensor([a for a, _ in _POSITIVES], device=block.device)
    width = 1 + max(len(n) for n in _NEGATIVES.values())
    candidates = torch.zeros(len(_POSITIVES), width, dtype=torch.long)
    valid = torch.zeros(len(_POSITIVES), width, dtype=torch.bool)
    for k, (a, p) in enumerate(_POSITIVES):
        row = (p, *_NEGATIVES[a])
        candidates[k, : len(row)] = torch.tensor(row)
        valid[k, : len(row)] = True
    candidates, valid = candidates.to(block.device), valid.to(block.device)
    positive = torch.zeros_like(valid)
    positive[:, 0] = True
    losses = multi_nt_xent(
        block[:, anchors].flatten(0, 1), block[:, candidates].flatten(0, 1),
        positive.expand(b, -1, -1).flatten(0, 1),
        valid_mask=valid.expand(b, -1, -1).flatten(0, 1), temperature=temperature,
        reduction="none",
    )
    return losses.view(b, len(_POSITIVES)).mean(dim=1).mean()


def confede_prediction_loss(outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> Tensor:
    r"""ConFEDE's prediction loss: the MSE of the fused prediction over every row (the anchors
    and their retrieved samples), :math:`\frac{1}{R}\sum_r (y^*_r - y_r)^2`."""
    prediction, y = _prediction_and_label(outputs, targets)
    return (prediction.to(y.dtype) - y).pow(2).mean()


def confede_unimodal_loss(outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> Tensor | None:
    r"""ConFEDE's unimodal loss: the MSE of the unimodal head's prediction of every feature over
    every row, against the multimodal label (ConFEDE's MOSI code uses :math:`y` for all six
    features): the mean over the features present of :math:`\frac{1}{R}\sum_r (u^*_{f,r} -
    y_r)^2`, which is ConFEDE's MSE over the :math:`6R` predictions when all six are present."""
    prediction, y = _prediction_and_label(outputs, targets)
    unimodal = _features(outputs, "unimodal", [prediction.shape[0]], "(ConFEDE's mono decoder)")
    if not unimodal:
        return None
    return torch.stack([(u.to(y.dtype) - y).pow(2).mean() for u in unimodal.values()]).mean()


def _contrastive_task(outputs: Mapping[str, Any], targets: Mapping[str, Any], *,
                      temperature: float) -> Tensor:
    prediction, _ = _prediction_and_label(outputs, targets)
    features = _features(outputs, "features", [prediction.shape[0], None], "(ConFEDE's six)")
    anchors = targets.get(NUM_ANCHORS, prediction.shape[0])
    if isinstance(anchors, bool) or not isinstance(anchors, int) or anchors < 1:
        raise ValueError(f"targets[{NUM_ANCHORS!r}] must be an int >= 1, got {anchors!r}")
    if anchors == prediction.shape[0]:  # no retrieved samples (evaluation): ConFEDE adds 0
        return prediction.sum() * 0.0
    return confede_contrastive(features, anchors, temperature=temperature)


def confede(*, temperature: float = 0.5, contrastive_weight: float = 0.1,
            unimodal_weight: float = 0.01, sampler: ConFEDESampler | None = None,
            ) -> MultiTaskObjective:
    r"""ConFEDE's objective, as its MOSI training script computes it.

    .. math::

        L = \mathrm{MSE}(y^*, y) + w_{CL} L_{CL} + w_{Uni} \mathrm{MSE}(u^*, y)

    with :func:`confede_prediction_loss` (task ``"MSE"``), :func:`confede_contrastive` (task
    ``"CL"``, :math:`\tau` = ``temperature``) and :func:`confede_unimodal_loss` (task ``"Uni"``),
    fixed weights :math:`w_{CL} = 0.1`, :math:`w_{Uni} = 0.01` (ConFEDE's; a weight of 0 drops
    its term, e.g. the contrastive one on data without audio or vision). The objective reads
    every row of the batch (``rows="all"``; the layout is in the module docstring) and holds
    ``sampler`` (default: a :class:`ConFEDESampler` with ConFEDE's settings) as
    ``objective.sampler``, so that its pools and random state are in ``state_dict()``.

    The training loop's part (ConFEDE's ``TVA_fusion_train.py``): at the epochs where
    ``objective.sampler.needs_rebuild(epoch)``, ``rebuild`` it from the training split's
    features; for each batch of anchors, ``objective.sampler.sample(index)`` gives six training
    rows per anchor; the model runs on the anchors and those rows, and the objective is called
    with ``targets["num_anchors"] = B``.

    Example:
        >>> import torch
        >>> from mtobjectives import recipes
        >>> _ = torch.manual_seed(0)
        >>> names = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")
        >>> rows = 7 * 2                              # 2 anchors and their 6 samples each
        >>> outputs = {"prediction": torch.randn(rows),
        ...            "features": {f: torch.randn(rows, 8) for f in names},
        ...            "unimodal": {f: torch.randn(rows) for f in names}}
        >>> result = recipes.confede()(outputs, {"M": torch.randn(rows), "num_anchors": 2})
        >>> {name: round(term.item(), 4) for name, term in result.terms.items()}
        {'MSE': 3.0208, 'CL': 1.6599, 'Uni': 2.1053}
    """
    check_positive("temperature", temperature)
    weights = {"MSE": 1.0, "CL": check_positive("contrastive_weight", contrastive_weight,
                                                allow_zero=True),
               "Uni": check_positive("unimodal_weight", unimodal_weight, allow_zero=True)}
    tasks = {"MSE": confede_prediction_loss,
             "CL": lambda o, t: _contrastive_task(o, t, temperature=temperature),
             "Uni": confede_unimodal_loss}
    kept = {name: task for name, task in tasks.items() if weights[name] > 0}  # 0: term off
    objective = MultiTaskObjective(
        kept, fixed={name: weights[name] for name in kept}, rows="all",
        check_batch=lambda o, t: REQUIREMENTS.check(o, t),
    )
    if sampler is not None and not isinstance(sampler, ConFEDESampler):
        raise TypeError(f"sampler must be a ConFEDESampler, got {type(sampler).__name__}")
    objective.sampler = sampler if sampler is not None else ConFEDESampler()
    return objective


class ConFEDESampler(nn.Module):
    r"""ConFEDE's sample selector: six training samples per anchor, from a similarity ranking.

    :meth:`rebuild` ranks the whole training split for every sample by the cosine similarity of
    their features (ConFEDE: the concatenated :math:`T; V; A` encoder outputs) and keeps, per
    anchor :math:`i`, pools of the first ``pool_size`` candidates of each kind, comparing the
    rounded labels (NumPy's half-to-even rounding, as ConFEDE's ``np.round``):

    - similar-similar: the most similar samples with the anchor's rounded label,
    - similar-dissimilar: the most similar samples with another rounded label,
    - dissimilar-dissimilar: the least similar samples with another rounded label.

    :meth:`sample` draws, per anchor, 2 distinct samples from each pool, in the order
    similar-similar, dissimilar-dissimilar, similar-dissimilar (:data:`KINDS`).

    ConFEDE's code stores the **rank position** :math:`j` where the sample id
    :math:`\mathrm{rank}[i][j]` is meant (and skips position :math:`j = i` rather than the
    anchor itself), so its pools hold low ids for the similar kinds and the last ids of the
    split for the dissimilar-dissimilar one, whatever the similarities: what it hands out is no
    better than chance. ``as_written=True`` (the default, to train exactly as ConFEDE's code
    does) hands out exactly those ids; ``as_written=False`` the ids its ranking meant (the
    anchor itself excluded).

    Memory: the ranking is computed for a block of anchors at a time (``block_rows``, default
    such that a block's similarities take about 16 MiB), never as an :math:`N \times N`
    matrix; the pools take :math:`3 \cdot N \cdot` ``pool_size`` integers.

    Args:
        pool_size: candidates kept per kind (ConFEDE: 10).
        rebuild_every: epochs between rebuilds (ConFEDE: 2 on MOSI, 10 on CH-SIMS);
            :meth:`needs_rebuild` is true at epochs 1, 1 + every, ...
        as_written: the pools of ConFEDE's code (``True``) or of its intent (``False``).
        seed: seed of the draws (the generator's state is in ``state_dict()``).
        block_rows: anchors ranked at once (``None``: chosen from the split's size).

    Example:
        >>> import torch
        >>> from mtobjectives.recipes import ConFEDESampler
        >>> _ = torch.manual_seed(0)
        >>> sampler = ConFEDESampler(pool_size=3, as_written=False)
        >>> labels = torch.tensor([-2.0, -2.0, -2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.2])
        >>> sampler.rebuild(torch.randn(10, 4), labels)
        >>> sampler.sample(torch.tensor([0, 4])).shape
        torch.Size([2, 6])
    """

    def __init__(self, *, pool_size: int = 10, rebuild_every: int = 2, as_written: bool = True,
                 seed: int = 0, block_rows: int | None = None) -> None:
        super().__init__()
        self.pool_size = check_int("pool_size", pool_size)
        self.rebuild_every = check_int("rebuild_every", rebuild_every)
        for name, value in (("pool_size", self.pool_size), ("rebuild_every", self.rebuild_every)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.pool_size < 2:
            raise ValueError(f"pool_size must be >= 2 (2 samples are drawn per kind), got "
                             f"{self.pool_size}")
        if not isinstance(as_written, bool):
            raise TypeError(f"as_written must be a bool, got {type(as_written).__name__}")
        self.as_written = as_written
        self.seed = check_int("seed", seed)
        if block_rows is not None and check_int("block_rows", block_rows) < 1:
            raise ValueError(f"block_rows must be >= 1 or None, got {block_rows}")
        self.block_rows = block_rows
        self._generator = torch.Generator().manual_seed(self.seed)
        #: Anchors whose last rebuild left a pool with fewer than 2 candidates (see rebuild).
        self.short_pools = 0
        self.pools: Tensor | None = None  # [N, 3, pool_size] ids, in the order of KINDS
        self.counts: Tensor | None = None  # [N, 3]: how many of each pool are filled
        self.rebuilds = 0

    # ------------------------------------------------------------------------ the schedule
    def needs_rebuild(self, epoch: int) -> bool:
        """Whether the pools are rebuilt before ``epoch`` (1-based): epochs 1, 1 + every, ..."""
        epoch = check_int("epoch", epoch)
        if epoch < 1:
            raise ValueError(f"epoch must be >= 1 (1-based), got {epoch}")
        return (epoch - 1) % self.rebuild_every == 0

    # ------------------------------------------------------------------------ the pools
    @torch.no_grad()
    def rebuild(self, features: Tensor, labels: Tensor) -> None:
        """Rank the training split and keep each anchor's pools (the old ones are replaced only
        when this succeeds).

        Args:
            features: ``[N, D]`` one vector per training sample (row :math:`i` is the sample
                whose index is :math:`i`), finite.
            labels: ``[N]`` their labels, finite (they are rounded here).

        A rounded label held by one or two clips leaves pools short, where ConFEDE's code
        fails: a pool with one candidate hands it out twice, an empty one holds the anchor
        itself (:attr:`short_pools` counts such anchors).

        Raises:
            ValueError: an empty split, non-finite features or labels, or shapes that disagree
                (the pools are left as they were).
        """
        check_floating("features", features)
        check_shape("features", features, ("N", "D"))
        check_floating("labels", labels)
        check_shape("labels", labels, (features.shape[0],))
        n = features.shape[0]
        if n < 2:
            raise ValueError(f"features must hold the training split (at least 2 samples), got "
                             f"shape {tuple(features.shape)}")
        for name, value in (("features", features), ("labels", labels)):
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise ValueError(f"{name} must be finite to rank the training split, got {bad} "
                                 "NaN or infinite value(s); the pools were left as they were")
        rounded = torch.round(labels.detach().double()).cpu()
        # float32, as ConFEDE ranks (a float64 input keeps its precision)
        unit = torch.nn.functional.normalize(
            features.detach().cpu().to(torch.promote_types(features.dtype, torch.float32)),
            dim=1, eps=1e-6)
        pools = torch.empty(n, 3, self.pool_size, dtype=torch.long)
        counts = torch.empty(n, 3, dtype=torch.long)
        block = self.block_rows or max(1, (1 << 21) // n)
        for start in range(0, n, block):
            rows = torch.arange(start, min(n, start + block))
            rank = torch.sort(unit[rows] @ unit.T, dim=1, descending=True).indices  # as ConFEDE
            pools[rows], counts[rows] = self._pools(rows, rank, rounded)
        # A rounded label held by one or two clips leaves a pool short (ConFEDE's code then
        # fails in random.sample): one candidate is drawn twice, and an empty pool holds the
        # anchor itself, so every anchor still gets its six samples.
        empty = counts == 0
        pools[:, :, 0] = torch.where(empty, torch.arange(n).unsqueeze(1), pools[:, :, 0])
        counts = torch.where(empty, 1, counts)
        self.short_pools = int((counts < 2).any(dim=1).sum())
        self.pools, self.counts = pools, counts
        self.rebuilds += 1

    def _pools(self, rows: Tensor, rank: Tensor, rounded: Tensor) -> tuple[Tensor, Tensor]:
        """The three pools of each anchor of ``rows`` from its ranking ``[b, N]``."""
        n = rank.shape[1]
        position = torch.arange(n).expand_as(rank)
        same = rounded[rank] == rounded[rows].unsqueeze(1)
        if self.as_written:  # ids = positions; position i skipped, position 0 never from below
            ids = position
            top_ok = position != rows.unsqueeze(1)
            bottom_ok = position != 0
        else:  # ids = the ranked samples, the anchor itself excluded
            ids = rank
            top_ok = rank != rows.unsqueeze(1)
            bottom_ok = top_ok
        kinds = ((same & top_ok, False), (~same & bottom_ok, True), (~same & top_ok, False))
        pools, counts = [], []
        for mask, from_bottom in kinds:
            order = n - 1 - position if from_bottom else position  # scan order
            key = torch.where(mask, order, n + order)
            first = torch.topk(key, min(self.pool_size, n), dim=1, largest=False).indices
            pool = ids.gather(1, first)  # entries past the count are never drawn
            pools.append(torch.nn.functional.pad(pool, (0, self.pool_size - pool.shape[1])))
            counts.append(mask.sum(dim=1).clamp_max(self.pool_size))
        return torch.stack(pools, dim=1), torch.stack(counts, dim=1)

    def sample(self, index: Tensor) -> Tensor:
        """Six training rows per anchor: 2 distinct from each pool, in the order of
        :data:`KINDS` (``[B, 6]`` int64, on ``index``'s device).

        Raises:
            RuntimeError: before the first :meth:`rebuild`.
            ValueError: an index outside the training split.
        """
        if self.pools is None or self.counts is None:
            raise RuntimeError("ConFEDESampler.sample() before rebuild(): rank the training "
                               "split first (ConFEDE rebuilds before epoch 1)")
        if not isinstance(index, Tensor) or index.dim() != 1 or index.dtype not in (
                torch.int64, torch.int32):
            raise TypeError(f"index must be a 1-D int64 tensor of training rows, got "
                            f"{type(index).__name__ if not isinstance(index, Tensor) else index}")
        rows = index.cpu().long()
        n = self.pools.shape[0]
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
            raise ValueError(f"index must hold training rows in [0, {n - 1}], got "
                             f"{rows[(rows < 0) | (rows >= n)][0].item()}")
        noise = torch.rand(len(rows), 3, self.pool_size, generator=self._generator)
        counts = self.counts[rows].unsqueeze(-1)
        filled = torch.arange(self.pool_size) < counts
        picks = torch.where(filled, noise, 2.0).topk(2, dim=-1, largest=False).indices
        picks = torch.where(counts >= 2, picks, 0)  # a one-candidate pool: it, twice
        drawn = self.pools[rows].gather(2, picks)  # [B, 3, 2]
        return drawn.flatten(1).to(index.device)

    def same_label_share(self, labels: Tensor, kind: str = "similar-similar") -> float:
        """The share of the ``kind`` pool entries whose rounded label equals their anchor's
        (the intent: 1 for similar-similar, 0 for the other kinds)."""
        if self.pools is None or self.counts is None:
            raise RuntimeError("same_label_share() before rebuild()")
        k = KINDS.index(kind)
        rounded = torch.round(labels.detach().double().cpu())
        filled = torch.arange(self.pool_size) < self.counts[:, k].unsqueeze(-1)
        same = rounded[self.pools[:, k]] == rounded.unsqueeze(1)
        return float(same[filled].double().mean())

    # ------------------------------------------------------------------------ state
    _STATE_VERSION = 1

    def get_extra_state(self) -> Tensor:
        """Pools, counts, rebuild count, settings and the generator's state, packed into one
        ``int64`` tensor (a ``state_dict()`` of tensors only, as the weighters keep theirs):
        ``[version, as_written, pool_size, rebuilds, N, pools (N*3*pool_size), counts (N*3),
        len(generator state), generator state bytes]``."""
        n = 0 if self.pools is None else self.pools.shape[0]
        generator = self._generator.get_state().to(torch.int64)
        parts = [torch.tensor([self._STATE_VERSION, int(self.as_written), self.pool_size,
                               self.rebuilds, n])]
        if self.pools is not None and self.counts is not None:
            parts += [self.pools.reshape(-1), self.counts.reshape(-1)]
        parts += [torch.tensor([generator.numel()]), generator]
        return torch.cat(parts)

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`'s tensor; refuse one saved with other settings."""
        if not isinstance(state, Tensor) or state.dtype != torch.int64 or state.dim() != 1 \
                or state.numel() < 6 or int(state[0]) != self._STATE_VERSION:
            raise ValueError("ConFEDESampler.load_state_dict(): the state must be the int64 "
                             "tensor that state_dict() saves")
        values = state.cpu()
        for position, key in ((1, "as_written"), (2, "pool_size")):
            saved = bool(values[position]) if key == "as_written" else int(values[position])
            if saved != getattr(self, key):
                raise ValueError(f"ConFEDESampler.load_state_dict(): the state was saved with "
                                 f"{key}={saved!r}, this sampler has {getattr(self, key)!r}; "
                                 "build it with the saved settings")
        rebuilds, n = int(values[3]), int(values[4])
        offset = 5
        pools = counts = None
        if n:
            size = n * 3 * self.pool_size
            pools = values[offset:offset + size].view(n, 3, self.pool_size).clone()
            counts = values[offset + size:offset + size + 3 * n].view(n, 3).clone()
            offset += size + 3 * n
        length = int(values[offset])
        self._generator.set_state(values[offset + 1:offset + 1 + length].to(torch.uint8))
        self.pools, self.counts, self.rebuilds = pools, counts, rebuilds

    def extra_repr(self) -> str:
        size = None if self.pools is None else self.pools.shape[0]
        return (f"pool_size={self.pool_size}, rebuild_every={self.rebuild_every}, "
                f"as_written={self.as_written}, samples={size}")
