r"""Self-MM's objective (Yu et al., 2021) as a recipe: :func:`self_mm` and its unimodal label
generation module :class:`SelfMMLabels` (ULGM), as MMSA 2.2.1 trains Self-MM
(``MMSA/trains/multiTask/SELF_MM.py``).

Self-MM trains the fused prediction on the multimodal label and each modality's own head on a
*generated* unimodal label, kept per training sample and moved every batch (from the second
epoch) by how far the sample's modality feature lies from the positive and negative centres,
relative to the fused feature. The label maps are the module's state (``state_dict()``), keyed
by the sample's index in the training split, so a resumed run continues them exactly.

What it reads (:data:`REQUIREMENTS`): ``outputs["prediction"]`` ``[B]`` (fused),
``outputs["unimodal"]`` with the modality heads' predictions ``{"T_d"|"A_d"|"V_d": [B]}``,
``outputs["features"]`` with their features ``{"T_d"|"A_d"|"V_d": [B, d_m]}``, optionally
``outputs["fusion_feature"]`` ``[B, d_f]`` (default: the concatenation of the decomposed
features present, in the order ``T_s, T_d, A_s, A_d, V_s, V_d``), ``targets["M"]`` and, in
training, ``targets["index"]`` ``[B]`` (int64, the sample's row in the training split). On
:class:`~mtobjectives.heads.DecompositionHead`'s outputs the dissimilarity features ``m_d`` are
the modality-specific representations. Anchors only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtobjectives._batch import FEATURE_NAMES, _features, _prediction_and_label, _required
from mtobjectives._validation import check_floating, check_shape, check_tensor
from mtobjectives.objective import MultiTaskObjective
from mtobjectives.recipes._requirements import Requirements

__all__ = ["REQUIREMENTS", "SelfMMLabels", "self_mm"]

#: What the Self-MM recipe reads.
REQUIREMENTS = Requirements(
    "self_mm",
    outputs={"prediction": "the fused prediction [B]",
             "unimodal": "the modality heads' predictions, {'T_d'|'A_d'|'V_d': [B]}",
             "features": "the modality features, {'T_d'|'A_d'|'V_d': [B, d_m]}"},
    targets={"M": "the multimodal label [B]"},
    training_targets={"index": "each sample's row in the training split [B], int64 (Self-MM "
                               "keeps a generated label per training sample)"},
)

MODALITIES: tuple[str, ...] = ("T", "A", "V")
_EPS = 1e-8  # MMSA's MIN


class SelfMMLabels(nn.Module):
    r"""Self-MM's unimodal label generation module (ULGM), a task of :func:`self_mm`.

    For each training sample :math:`i` it keeps the labels :math:`y^f_i` (fusion, the
    multimodal label) and :math:`y^m_i` for :math:`m \in \{T, A, V\}` (initialised to
    :math:`y^f_i`), the last features :math:`F^f_i, F^m_i` seen for it, and per representation
    the centres of the samples with positive and negative labels,
    :math:`C^s_{p} = \mathrm{mean}\{F^s_i : y^s_i > 0\}` (:math:`\ge 0` with
    ``exclude_zero=False``), :math:`C^s_{n} = \mathrm{mean}\{F^s_i : y^s_i < 0\}`. After a
    batch's loss, in training mode, from the second epoch on (MMSA's ``update_labels``):

    .. math::

        \delta_s = \frac{\lVert F^s - C^s_n \rVert - \lVert F^s - C^s_p \rVert}
                        {\lVert F^s - C^s_p \rVert + \epsilon}, \quad
        \hat{y}^m = \mathrm{clip}_{[-H, H]}\Big(\tfrac{1}{2} \frac{\delta_m}{\delta_f + \epsilon}
                    y^f + \tfrac{1}{2}(y^f + \delta_m - \delta_f)\Big), \quad
        y^m \leftarrow \frac{n - 1}{n + 1} y^m + \frac{2}{n + 1} \hat{y}^m

    with :math:`n` the 1-based epoch and :math:`\epsilon = 10^{-8}`; then the batch's features
    are stored (``update_features``) and every centre recomputed (``update_centers``). Its loss
    for a batch (:meth:`loss`, MMSA's ``weighted_loss``) is, for the fused prediction and each
    modality's,

    .. math::

        L_f = \frac{1}{B}\sum_b \lvert \hat{y}^f_b - y^f_b \rvert, \quad
        L_m = \frac{1}{B}\sum_b \tanh\lvert y^m_b - y^f_b \rvert \, \lvert \hat{y}^m_b - y^m_b
        \rvert

    The epoch counter advances with :meth:`step` (``objective.step()`` at each epoch end). All
    state is in buffers: ``state_dict()`` carries it, ``.to(device)`` moves it. Under
    :mod:`torch.distributed` every rank's batch is gathered before the update, so the maps stay
    identical on every rank.

    Args:
        labels: the multimodal label of every training sample, ``[N]`` (row :math:`i` is the
            sample whose ``targets["index"]`` is :math:`i`); MMSA's ``init_labels``.
        feature_dims: the width of the fusion feature (``"M"``) and of each modality's feature
            (``"T"``, ``"A"``, ``"V"``; MMSA's MOSI: 128, 32, 16, 32).
        bound: :math:`H`, the generated labels' bound (MMSA: 3 on MOSI/MOSEI, 1 on CH-SIMS).
        exclude_zero: the positive centre takes labels :math:`> 0` (MMSA's default ``True``),
            else :math:`\ge 0`.

    Example:
        >>> import torch
        >>> from mtobjectives.recipes import SelfMMLabels
        >>> ulgm = SelfMMLabels(torch.tensor([1.0, -1.0, 2.0]), {"M": 4, "T": 2, "A": 2, "V": 2})
        >>> ulgm.labels["T"].tolist()
        [1.0, -1.0, 2.0]
    """

    def __init__(self, labels: Tensor, feature_dims: Mapping[str, int], *, bound: float = 3.0,
                 exclude_zero: bool = True) -> None:
        super().__init__()
        check_floating("labels", labels)
        check_shape("labels", labels, ("N",))
        if labels.shape[0] == 0 or not bool(torch.isfinite(labels).all()):
            raise ValueError(f"labels must be the finite labels of a non-empty training split, "
                             f"got shape {tuple(labels.shape)} with "
                             f"{int((~torch.isfinite(labels)).sum())} non-finite value(s)")
        dims = _check_dims(feature_dims)
        if not (isinstance(bound, (int, float)) and 0 < bound < float("inf")):
            raise ValueError(f"bound must be a finite number > 0, got {bound!r}")
        self.bound, self.exclude_zero = float(bound), bool(exclude_zero)
        n = labels.shape[0]
        for s in ("M", *MODALITIES):
            self.register_buffer(f"label_{s}", labels.detach().clone().float())
            self.register_buffer(f"feature_{s}", torch.zeros(n, dims[s]))
            self.register_buffer(f"center_pos_{s}", torch.zeros(dims[s]))
            self.register_buffer(f"center_neg_{s}", torch.zeros(dims[s]))
        self.register_buffer("epoch", torch.ones((), dtype=torch.long))

    @property
    def labels(self) -> dict[str, Tensor]:
        """The current labels ``{"M"|"T"|"A"|"V": [N]}`` (views of the buffers)."""
        return {s: getattr(self, f"label_{s}") for s in ("M", *MODALITIES)}

    @property
    def num_samples(self) -> int:
        return int(self.label_M.shape[0])

    def step(self) -> None:
        """End an epoch: the label updates use the epoch's number (from 2 on)."""
        self.epoch += 1

    def loss(self, predictions: Mapping[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        """MMSA's ``weighted_loss`` of the fused (``"M"``) and each modality's prediction."""
        return self._loss_terms(predictions, self._check_index(index))

    def _loss_terms(self, predictions: Mapping[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        """:meth:`loss` for an index already checked (``int64`` rows on the maps' device)."""
        fused = self.label_M[index]
        out = {"M": (predictions["M"] - fused).abs().mean()}
        for m in MODALITIES:
            if m in predictions:
                label = getattr(self, f"label_{m}")[index]
                weight = torch.tanh((label - fused).abs())
                out[m] = (weight * (predictions[m] - label).abs()).mean()
        return out

    @torch.no_grad()
    def update(self, features: Mapping[str, Tensor], index: Tensor) -> None:
        """After a batch: new labels (from the second epoch), its features stored, the centres.

        Raises:
            ValueError: a feature is not finite, or a centre would be the mean of no sample.
        """
        index = self._check_index(index)
        features = {s: f.detach().float() for s, f in features.items()}
        for s, value in features.items():
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"Self-MM's features[{s!r}] must be finite to update the "
                                 "labels (nothing was updated)")
        index, features = _gather(index, features)
        if int(self.epoch) > 1:
            self._update_labels(features, index)
        for s, value in features.items():
            getattr(self, f"feature_{s}")[index] = value
        self._update_centers()

    def _update_labels(self, features: Mapping[str, Tensor], index: Tensor) -> None:
        n = int(self.epoch)
        delta_f = self._delta("M", features["M"])
        fused = self.label_M[index]
        for m in (m for m in MODALITIES if m in features):
            delta_m = self._delta(m, features[m])
            alpha = delta_m / (delta_f + _EPS)
            new = 0.5 * alpha * fused + 0.5 * (fused + delta_m - delta_f)
            new = new.clamp(-self.bound, self.bound)
            labels = getattr(self, f"label_{m}")
            labels[index] = (n - 1) / (n + 1) * labels[index] + 2 / (n + 1) * new

    def _delta(self, s: str, feature: Tensor) -> Tensor:
        to_pos = torch.linalg.vector_norm(feature - getattr(self, f"center_pos_{s}"), dim=-1)
        to_neg = torch.linalg.vector_norm(feature - getattr(self, f"center_neg_{s}"), dim=-1)
        return (to_neg - to_pos) / (to_pos + _EPS)

    def _update_centers(self) -> None:
        names = ("M", *MODALITIES)
        masks = {}
        for s in names:
            labels = getattr(self, f"label_{s}")
            masks[s] = torch.stack([labels > 0 if self.exclude_zero else labels >= 0,
                                    labels < 0])  # [2, N]: positive, negative
        empty = (~torch.stack([m.any(dim=1) for m in masks.values()])).nonzero()  # one sync
        if len(empty):
            s, sign = names[int(empty[0, 0])], ("positive", "negative")[int(empty[0, 1])]
            raise ValueError(f"Self-MM's {sign} centre of {s!r} is the mean of no sample: every "
                             f"label of {s!r} has the other sign; Self-MM needs training labels "
                             "of both signs")
        for s in names:  # the mean of the selected rows, as MMSA computes it (same rounding)
            features = getattr(self, f"feature_{s}")
            getattr(self, f"center_pos_{s}").copy_(features[masks[s][0]].mean(dim=0))
            getattr(self, f"center_neg_{s}").copy_(features[masks[s][1]].mean(dim=0))

    def _check_index(self, index: Tensor) -> Tensor:
        check_tensor("targets['index']", index)
        if index.dtype not in (torch.int64, torch.int32) or index.dim() != 1:
            raise TypeError(f"targets['index'] must be a 1-D int64 tensor of training-split "
                            f"rows, got dtype {index.dtype} and shape {tuple(index.shape)}")
        index = index.to(self.label_M.device, torch.long)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            bad = index[(index < 0) | (index >= self.num_samples)][0].item()
            raise ValueError(f"targets['index'] holds {bad}, a row this label map has never "
                             f"seen: it keeps labels for the {self.num_samples} training "
                             f"samples, rows 0 to {self.num_samples - 1}")
        return index

    def forward(self, outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> None:
        """The objective's last task: update the maps after the batch (training mode only).

        Returns ``None`` (it adds no loss); the losses are the tasks ``"M"``, ``"T"``, ...
        """
        if not self.training:
            return None
        index = _required(targets, "targets", "index", "(Self-MM's sample index)")
        prediction, _ = _prediction_and_label(outputs, targets)
        features = _modality_features(outputs, prediction.shape[0])
        self.update(features, index)
        return None

    def extra_repr(self) -> str:
        return (f"num_samples={self.num_samples}, bound={self.bound}, "
                f"exclude_zero={self.exclude_zero}")


def self_mm(labels: Tensor, feature_dims: Mapping[str, int], *, bound: float = 3.0,
            exclude_zero: bool = True) -> MultiTaskObjective:
    r"""Self-MM's objective: the fused and three unimodal weighted L1 losses on generated labels.

    .. math::

        L = L_f + L_T + L_A + L_V

    with the terms and the label generation of :class:`SelfMMLabels`, whose arguments these
    are (MMSA's MOSI defaults: ``bound`` 3, ``exclude_zero=True``). Tasks ``"M"``, ``"T"``,
    ``"A"``, ``"V"`` with weight 1, and ``"labels"`` (the label module, run last: it updates the
    maps in training mode and adds no loss). In evaluation mode only ``"M"`` is computed, against
    ``targets["M"]`` (as MMSA's ``do_test``), and no ``targets["index"]`` is needed.

    Call ``objective.step()`` at each epoch end (the label updates start in epoch 2).

    Example:
        >>> import torch
        >>> from mtobjectives import recipes
        >>> _ = torch.manual_seed(0)
        >>> objective = recipes.self_mm(torch.tensor([1.5, -0.5, 2.0, -2.5]),
        ...                             {"M": 6, "T": 2, "A": 2, "V": 2})
        >>> outputs = {"prediction": torch.zeros(2),
        ...            "unimodal": {f"{m}_d": torch.zeros(2) for m in "TAV"},
        ...            "features": {f"{m}_d": torch.randn(2, 2) for m in "TAV"}}
        >>> targets = {"M": torch.tensor([1.5, -0.5]), "index": torch.tensor([0, 1])}
        >>> {name: term.item() for name, term in objective(outputs, targets).terms.items()}
        {'M': 1.0, 'T': 0.0, 'A': 0.0, 'V': 0.0}
    """
    ulgm = SelfMMLabels(labels, feature_dims, bound=bound, exclude_zero=exclude_zero)

    def term(name: str) -> Any:
        def task(outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> Tensor | None:
            return _self_mm_term(ulgm, name, outputs, targets)

        return task

    tasks: dict[str, Any] = {name: term(name) for name in ("M", *MODALITIES)}
    tasks["labels"] = ulgm
    def check_batch(outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> None:
        REQUIREMENTS.check(outputs, targets, training=ulgm.training)
        if ulgm.training:
            ulgm._check_index(targets["index"])

    return MultiTaskObjective(tasks, fixed={name: 1.0 for name in tasks},
                              check_batch=check_batch)


def _self_mm_term(ulgm: SelfMMLabels, name: str, outputs: Mapping[str, Any],
                  targets: Mapping[str, Any]) -> Tensor | None:
    prediction, y = _prediction_and_label(outputs, targets)
    if not ulgm.training:  # evaluation: the fused prediction against the true label
        return (prediction - y).abs().mean() if name == "M" else None
    index = targets["index"].to(ulgm.label_M.device, torch.long)  # checked by the batch check
    if name == "M":
        return ulgm._loss_terms({"M": prediction}, index)["M"]
    unimodal = _features(outputs, "unimodal", [prediction.shape[0]], "(Self-MM's heads)")
    key = f"{name}_d"
    if key not in unimodal:
        return None
    return ulgm._loss_terms({"M": prediction, name: unimodal[key]}, index)[name]


def _modality_features(outputs: Mapping[str, Any], batch: int) -> dict[str, Tensor]:
    features = _features(outputs, "features", [batch, None], "(Self-MM's features)")
    fusion = outputs.get("fusion_feature")
    if fusion is None:
        fusion = torch.cat([features[f] for f in FEATURE_NAMES if f in features], dim=-1)
    check_floating("outputs['fusion_feature']", fusion)
    check_shape("outputs['fusion_feature']", fusion, [batch, None])
    out = {"M": fusion}
    out.update({m: features[f"{m}_d"] for m in MODALITIES if f"{m}_d" in features})
    return out


def _check_dims(feature_dims: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(feature_dims, Mapping):
        raise TypeError(f"feature_dims must be a mapping {{'M'|'T'|'A'|'V': int}}, got "
                        f"{type(feature_dims).__name__}")
    wanted = ("M", *MODALITIES)
    if sorted(feature_dims) != sorted(wanted) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0
            for v in feature_dims.values()):
        raise ValueError(f"feature_dims must give an int > 0 for each of {list(wanted)}, got "
                         f"{dict(feature_dims)!r}")
    return dict(feature_dims)


def _gather(index: Tensor, features: Mapping[str, Tensor]
            ) -> tuple[Tensor, dict[str, Tensor]]:
    """Every rank's batch (under :mod:`torch.distributed`), so the maps agree on every rank."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return index, dict(features)
    sizes = [torch.zeros((), dtype=torch.long, device=index.device)
             for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(index.numel(), device=index.device))
    largest = int(max(s.item() for s in sizes))
    gathered_index = _gather_padded(index, largest, [int(s) for s in sizes])
    gathered = {s: _gather_padded(f, largest, [int(n) for n in sizes])
                for s, f in features.items()}
    return gathered_index, gathered


def _gather_padded(value: Tensor, largest: int, sizes: Sequence[int]) -> Tensor:
    dist = torch.distributed
    padded = value.new_zeros((largest, *value.shape[1:]))
    padded[: value.shape[0]] = value
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])
