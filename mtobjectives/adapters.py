r"""Attach a recipe to a model that already decomposes its features (ConFEDE's ``TVA_fusion``).

:class:`~mtobjectives.heads.DecompositionHead` adds the projectors and heads to a backbone that
has none. A model such as ConFEDE's already has all six projectors, the fusion decoder and the
unimodal decoder; building the head on it would train about 4 M parameters for nothing.
:class:`DecomposedOutputs` only rearranges what the model computes into the outputs dict the
recipes read, and adds what a recipe needs that the model lacks (DMMSA's coarse classifier).

ConFEDE concatenates its six features as ``x1_all`` in the order :data:`CONFEDE_ORDER`
(:math:`T_s, V_s, A_s, T_d, V_d, A_d`), not the library's :math:`T, A, V`; all six have the same
width, so a wrong order raises nothing by itself. The adapter therefore takes the order as a
required argument, checks that it names each feature once, and the widths against it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtobjectives._batch import FEATURE_NAMES
from mtobjectives._validation import check_floating, check_int, check_shape
from mtobjectives.heads import mlp

__all__ = ["CONFEDE_ORDER", "DecomposedOutputs"]

#: The order of ConFEDE's concatenated features ``x1_all`` (``TVA_fusion.forward``).
CONFEDE_ORDER: tuple[str, ...] = ("T_s", "V_s", "A_s", "T_d", "V_d", "A_d")


class DecomposedOutputs(nn.Module):
    r"""The recipes' outputs dict from a model's own decomposed features and predictions.

    .. math::

        \text{outputs} = \{\text{prediction}: y^*, \ \text{features}: \{f: x_f\}, \
            \text{unimodal}: \{f: U(x_f)\}, \ \text{logits}: C([x_f]_f)\}

    where :math:`x_f` are the model's decomposed features (sliced from one concatenation in the
    declared ``order``, or given by name), :math:`y^*` its fused prediction, :math:`U` its own
    unimodal decoder (``unimodal_head``, applied to each feature; ConFEDE's ``mono_decoder``)
    and :math:`C` a coarse classifier on the concatenation in the library's order, created only
    with ``num_classes`` (DMMSA's MSC term needs it; ConFEDE's model has none).

    Args:
        order: the names of the features in the concatenated tensor, in its order (e.g.
            :data:`CONFEDE_ORDER`); each of ``T_s, T_d, A_s, A_d, V_s, V_d`` at most once, both
            features of every modality named.
        feature_dim: the width of each feature (ConFEDE: 384).
        unimodal_head: the model's unimodal decoder ``[..., D] -> [..., 1]`` (``None``: no
            ``"unimodal"`` outputs, e.g. for a recipe without a unimodal term).
        num_classes: create a coarse classifier with this many classes (``None``: none).
        classifier_hidden: the classifier's hidden widths (ConFEDE's decoder widths by default).

    Shape:
        - ``features``: :math:`(B, K D)` with :math:`K` = ``len(order)``, or a dict of
          :math:`(B, D)`.
        - ``prediction``: :math:`(B)` or :math:`(B, 1)` (ConFEDE's).
        - output: ``"prediction"`` :math:`(B)`, ``"features"[f]`` :math:`(B, D)`,
          ``"unimodal"[f]`` :math:`(B)`, ``"logits"`` :math:`(B, C)`.

    Example:
        >>> import torch
        >>> from mtobjectives.adapters import CONFEDE_ORDER, DecomposedOutputs
        >>> adapter = DecomposedOutputs(CONFEDE_ORDER, feature_dim=4, num_classes=3)
        >>> x1_all = torch.arange(24.0).repeat(2, 1)          # ConFEDE's [B, 6 * D]
        >>> out = adapter(x1_all, prediction=torch.zeros(2, 1))
        >>> out["features"]["V_s"][0].tolist(), out["prediction"].shape, out["logits"].shape
        ([4.0, 5.0, 6.0, 7.0], torch.Size([2]), torch.Size([2, 3]))
    """

    def __init__(self, order: Sequence[str], *, feature_dim: int,
                 unimodal_head: nn.Module | Callable[[Tensor], Tensor] | None = None,
                 num_classes: int | None = None,
                 classifier_hidden: Sequence[int] = (768, 384, 192, 96)) -> None:
        super().__init__()
        self.order = _check_order(order)
        self.feature_dim = check_int("feature_dim", feature_dim)
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        if unimodal_head is not None and not callable(unimodal_head):
            raise TypeError(f"unimodal_head must be a module or callable, got "
                            f"{type(unimodal_head).__name__}")
        # The model's own decoder: used, never registered as a submodule, so that its
        # parameters stay the model's alone (an optimizer of both would list them twice).
        object.__setattr__(self, "_unimodal_head", unimodal_head)
        self.classifier: nn.Module | None = None
        if num_classes is not None:
            if check_int("num_classes", num_classes) < 2:
                raise ValueError(f"num_classes must be >= 2, got {num_classes}")
            width = len(self.order) * self.feature_dim
            self.classifier = mlp(width, tuple(classifier_hidden), num_classes)

    def forward(self, features: Tensor | Mapping[str, Tensor], prediction: Tensor
                ) -> dict[str, Any]:
        """The outputs dict (see the class docstring)."""
        named = self._named(features)
        check_floating("prediction", prediction)
        batch = next(iter(named.values())).shape[0]
        if prediction.dim() == 2 and prediction.shape[1] == 1:
            prediction = prediction.squeeze(1)  # ConFEDE's decoder returns [B, 1]
        check_shape("prediction", prediction, [batch])
        ordered = {f: named[f] for f in FEATURE_NAMES if f in named}  # the library's order
        outputs: dict[str, Any] = {"prediction": prediction, "features": ordered}
        if self._unimodal_head is not None:
            outputs["unimodal"] = {f: _as_vector(self._unimodal_head(x), f, batch)
                                   for f, x in ordered.items()}
        if self.classifier is not None:
            outputs["logits"] = self.classifier(torch.cat(list(ordered.values()), dim=-1))
        return outputs

    def _named(self, features: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        if isinstance(features, Mapping):
            if sorted(features) != sorted(self.order):
                raise ValueError(f"features must name exactly the declared order "
                                 f"{list(self.order)}, got {list(features)}")
            named = dict(features)
        else:
            check_floating("features", features)
            width = len(self.order) * self.feature_dim
            check_shape("features", features, ["B", width])
            named = dict(zip(self.order, features.split(self.feature_dim, dim=-1)))
        for name, value in named.items():
            check_floating(f"features[{name!r}]", value)
            check_shape(f"features[{name!r}]", value, ["B", self.feature_dim])
        return named

    def extra_repr(self) -> str:
        return (f"order={list(self.order)}, feature_dim={self.feature_dim}, "
                f"classifier={self.classifier is not None}")


def _check_order(order: Sequence[str]) -> tuple[str, ...]:
    if isinstance(order, (str, bytes)) or not isinstance(order, Sequence):
        raise TypeError(f"order must be a sequence of feature names (e.g. CONFEDE_ORDER), got "
                        f"{type(order).__name__}")
    names = tuple(order)
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown or len(set(names)) != len(names) or not names:
        raise ValueError(f"order must name each of {list(FEATURE_NAMES)} at most once, got "
                         f"{list(names)}")
    modalities = {n[0] for n in names}
    unpaired = [f"{m}_{k}" for m in sorted(modalities) for k in "sd" if f"{m}_{k}" not in names]
    if unpaired:
        raise ValueError(f"order must name both features of each modality it names, got "
                         f"{list(names)} (missing {unpaired})")
    return names


def _as_vector(value: Tensor, name: str, batch: int) -> Tensor:
    if isinstance(value, Tensor) and value.dim() == 2 and value.shape[1] == 1:
        value = value.squeeze(1)
    check_floating(f"unimodal_head({name})", value)
    check_shape(f"unimodal_head({name})", value, [batch])
    return value
