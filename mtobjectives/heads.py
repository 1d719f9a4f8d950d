"""The DMMSA decomposition head: attach the paper's outputs to any backbone.

:class:`DecompositionHead` turns a backbone's pooled unimodal features ``{"T", "A", "V"}`` into
exactly what the DMMSA objective (:meth:`mtobjectives.MultiTaskObjective.dmmsa`) reads: the six
decomposed features, the fused regression output, the coarse-class logits and the predictions of
the weight-shared unimodal head. Its layout and default widths are ConFEDE's (Yang et al., 2023),
which the DMMSA paper keeps unchanged (section 3.2, Fig. 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import torch
from torch import Tensor, nn

from mtobjectives._validation import (
    check_floating,
    check_int,
    check_real,
    check_same_device,
    check_shape,
)

__all__ = ["MODALITIES", "DMMSAOutputs", "DecompositionHead", "mlp"]

#: The modalities a head accepts, in the order of the paper's concatenation (Eq. 6).
MODALITIES: tuple[str, ...] = ("T", "A", "V")


class DMMSAOutputs(TypedDict):
    """What :class:`DecompositionHead` returns and the DMMSA objective reads.

    ``features`` and ``unimodal`` are keyed ``"T_s", "T_d", "A_s", "A_d", "V_s", "V_d"`` (only the
    modalities the head was built for), in the order of Eq. 6.
    """

    prediction: Tensor
    logits: Tensor
    features: dict[str, Tensor]
    unimodal: dict[str, Tensor]


def _check_width(name: str, value: object) -> int:
    width = check_int(name, value, expected="a positive int")
    if width < 1:
        raise ValueError(f"{name} must be a positive int, got {width!r}")
    return width


def _check_widths(name: str, value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, got {type(value).__name__}")
    return tuple(_check_width(f"{name}[{i}]", w) for i, w in enumerate(value))


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int = 1) -> nn.Sequential:
    """``Linear -> GELU`` for each hidden width, then a final ``Linear`` (ConFEDE's classifier).

    The fusion MLP, the coarse classifier and the unimodal MLP of :class:`DecompositionHead` are
    built with it (Eq. 6-8), as are ConFEDE's unimodal pre-training regressors.

    Shape:
        - input: ``[..., in_dim]``; output: ``[..., out_dim]``.

    Example:
        >>> from mtobjectives.heads import mlp
        >>> mlp(8, (4, 2), 1)
        Sequential(
          (0): Linear(in_features=8, out_features=4, bias=True)
          (1): GELU(approximate='none')
          (2): Linear(in_features=4, out_features=2, bias=True)
          (3): GELU(approximate='none')
          (4): Linear(in_features=2, out_features=1, bias=True)
        )
    """
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.GELU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def _projector(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.Tanh(), nn.Dropout(dropout)
    )


class DecompositionHead(nn.Module):
    r"""Similarity/dissimilarity decomposition with fusion, coarse-classifier and unimodal heads.

    For each modality :math:`m` with pooled feature :math:`h_m`, two projectors give its
    similarity and dissimilarity features, which a fusion MLP (Eq. 6) and a classifier (Eq. 8)
    read concatenated, and a single weight-shared MLP reads one at a time (the unimodal task):

    .. math::

        m_s = \mathrm{Drop}\big(\tanh(W^s_m\,\mathrm{LN}(h_m) + b^s_m)\big), \qquad
        m_d = \mathrm{Drop}\big(\tanh(W^d_m\,\mathrm{LN}(h_m) + b^d_m)\big)

        y^{*} = \mathrm{MLP}([T_s; T_d; A_s; A_d; V_s; V_d]) \qquad (6)

        y_{MSC} = \mathrm{Classifier}([T_s; T_d; A_s; A_d; V_s; V_d]) \qquad (8)

        u^{*}_f = \mathrm{MLP}_{uni}(f), \quad f \in \{T_s, T_d, A_s, A_d, V_s, V_d\}

    where

    - :math:`h_m` is the backbone's feature of modality :math:`m \in \{T, A, V\}`,
    - :math:`m_s, m_d` (e.g. :math:`T_s, T_d`) are its similarity and dissimilarity features,
    - :math:`y^{*}` is the fused sentiment prediction (read by the MSR loss, Eq. 7),
    - :math:`y_{MSC}` are the logits over the coarse classes (read by the MSC loss, Eq. 9),
    - :math:`u^{*}_f` are the six unimodal predictions (read by the unimodal loss, Eq. 10).

    The three MLPs are ``Linear -> GELU`` per hidden width followed by a final ``Linear`` and have
    no dropout, as in ConFEDE's ``BaseClassifier``; dropout sits at the end of each projector.
    Any non-empty subset of ``T``/``A``/``V`` works: the concatenation then holds
    :math:`2M` features for :math:`M` modalities, always in the order ``T, A, V``.

    Features of another floating dtype than the head's parameters (e.g. ``float64`` from NumPy,
    or ``float16`` from a half-precision backbone, into a ``float32`` head) are cast to the
    parameters' dtype before the first layer, so the head computes, and returns, in its own
    dtype; gradients flow back to the features in their own dtype. Inside a
    :func:`torch.autocast` region the features are passed on unchanged and autocast chooses
    the dtypes, as for any layer. Features on another device than the parameters raise a
    :class:`ValueError` naming both devices (nothing is moved between devices silently).

    Args:
        in_dims: the feature width :math:`d_m` of each modality, e.g. ``{"T": 768, "A": 768}``;
            keys are a non-empty subset of ``"T"``, ``"A"``, ``"V"``.
        feature_dim: width :math:`D` of every decomposed feature (paper: 384).
        fusion_hidden: hidden widths of the fusion MLP and of the classifier
            (paper: ``(768, 384, 192, 96)``).
        unimodal_hidden: hidden widths of the shared unimodal MLP (paper: ``(192, 96)``).
        num_classes: number of coarse classes :math:`C` (paper: 3, negative/neutral/positive).
        dropout: dropout probability at the end of each projector (paper: 0.5).
        reconstruction: also reconstruct each modality's input from :math:`m_s + m_d` with a
            linear decoder, as MISA's objective needs (:func:`mtobjectives.recipes.misa`):
            the outputs then hold ``"reconstruction"`` and ``"reconstruction_target"`` (the
            input features), ``{m: [B, d_m]}``. Default ``False``: no decoder, the outputs
            (and the initialisation of every other layer) are exactly those without the
            option.

    Returns:
        :class:`DMMSAOutputs`, a dict with ``"prediction"``, ``"logits"``, ``"features"`` and
        ``"unimodal"`` (and the reconstruction keys with ``reconstruction=True``).

    Shape:
        - Input ``features[m]``: :math:`(B, d_m)` for each modality in ``in_dims``.
        - Output ``"prediction"``: :math:`(B)`.
        - Output ``"logits"``: :math:`(B, C)`.
        - Output ``"features"[f]``: :math:`(B, D)` for ``f`` in ``T_s, T_d, A_s, A_d, V_s, V_d``.
        - Output ``"unimodal"[f]``: :math:`(B)`.

    Example:
        >>> import torch
        >>> from mtobjectives.heads import DecompositionHead
        >>> _ = torch.manual_seed(0)
        >>> head = DecompositionHead({"T": 768, "A": 5, "V": 20}, feature_dim=32,
        ...                          fusion_hidden=(64, 32), unimodal_hidden=(16,))
        >>> out = head({"T": torch.randn(4, 768), "A": torch.randn(4, 5), "V": torch.randn(4, 20)})
        >>> out["prediction"].shape, out["logits"].shape
        (torch.Size([4]), torch.Size([4, 3]))
        >>> list(out["features"])
        ['T_s', 'T_d', 'A_s', 'A_d', 'V_s', 'V_d']
        >>> out["features"]["T_s"].shape, out["unimodal"]["V_d"].shape
        (torch.Size([4, 32]), torch.Size([4]))
    """

    def __init__(
        self,
        in_dims: Mapping[str, int],
        *,
        feature_dim: int = 384,
        fusion_hidden: Sequence[int] = (768, 384, 192, 96),
        unimodal_hidden: Sequence[int] = (192, 96),
        num_classes: int = 3,
        dropout: float = 0.5,
        reconstruction: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(reconstruction, bool):
            raise TypeError(f"reconstruction must be a bool, got {type(reconstruction).__name__}")
        if not isinstance(in_dims, Mapping):
            raise TypeError(
                f"in_dims must be a mapping from modality to width, got {type(in_dims).__name__}"
            )
        unknown = [m for m in in_dims if m not in MODALITIES]
        if unknown or not in_dims:
            raise ValueError(
                f"in_dims must have a non-empty subset of {list(MODALITIES)} as keys, "
                f"got {list(in_dims)}"
            )
        self.in_dims: dict[str, int] = {
            m: _check_width(f"in_dims[{m!r}]", in_dims[m]) for m in MODALITIES if m in in_dims
        }
        self.feature_dim = _check_width("feature_dim", feature_dim)
        self.num_classes = _check_width("num_classes", num_classes)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        fusion_hidden = _check_widths("fusion_hidden", fusion_hidden)
        unimodal_hidden = _check_widths("unimodal_hidden", unimodal_hidden)
        dropout = check_real("dropout", dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

        #: Modalities in the order of Eq. 6 (a subset of ``("T", "A", "V")``).
        self.modalities: tuple[str, ...] = tuple(self.in_dims)
        #: Names of the decomposed features, in the order of Eq. 6.
        self.feature_names: tuple[str, ...] = tuple(
            f"{m}_{kind}" for m in self.modalities for kind in ("s", "d")
        )
        self.similarity = nn.ModuleDict(
            {m: _projector(d, self.feature_dim, dropout) for m, d in self.in_dims.items()}
        )
        self.dissimilarity = nn.ModuleDict(
            {m: _projector(d, self.feature_dim, dropout) for m, d in self.in_dims.items()}
        )
        fused_dim = len(self.feature_names) * self.feature_dim
        self.fusion = mlp(fused_dim, fusion_hidden, 1)
        self.classifier = mlp(fused_dim, fusion_hidden, self.num_classes)
        self.unimodal = mlp(self.feature_dim, unimodal_hidden, 1)
        #: MISA's decoders, ``m_s + m_d -> h_m`` (``None`` without ``reconstruction=True``).
        self.decoders: nn.ModuleDict | None = None
        if reconstruction:  # created last: the layers above are initialised as without it
            self.decoders = nn.ModuleDict(
                {m: nn.Linear(self.feature_dim, d) for m, d in self.in_dims.items()}
            )

    def forward(self, features: Mapping[str, Tensor]) -> DMMSAOutputs:
        """Decompose ``features`` and run the three heads (see the class docstring)."""
        self._check_features(features)
        decomposed: dict[str, Tensor] = {}
        inputs: dict[str, Tensor] = {}
        device_type = features[self.modalities[0]].device.type
        autocast = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(
            device_type
        )
        for m in self.modalities:
            # Another floating dtype is cast to the head's, outside autocast (class docstring).
            x = features[m] if autocast else features[m].to(self.similarity[m][0].weight.dtype)
            inputs[m] = x
            decomposed[f"{m}_s"] = self.similarity[m](x)
            decomposed[f"{m}_d"] = self.dissimilarity[m](x)
        stacked = list(decomposed.values())
        fused = torch.cat(stacked, dim=-1)
        # One call of the shared head on all 2M features: [2M, B, D] -> [2M, B].
        unimodal = self.unimodal(torch.stack(stacked)).squeeze(-1)
        outputs = DMMSAOutputs(
            prediction=self.fusion(fused).squeeze(-1),
            logits=self.classifier(fused),
            features=decomposed,
            unimodal=dict(zip(self.feature_names, unimodal.unbind(0))),
        )
        if self.decoders is not None:
            outputs["reconstruction"] = {  # type: ignore[typeddict-unknown-key]
                m: self.decoders[m](decomposed[f"{m}_s"] + decomposed[f"{m}_d"])
                for m in self.modalities
            }
            outputs["reconstruction_target"] = inputs  # type: ignore[typeddict-unknown-key]
        return outputs

    def _check_features(self, features: Mapping[str, Tensor]) -> None:
        if not isinstance(features, Mapping):
            raise TypeError(
                f"features must be a mapping from modality to tensor, got {type(features).__name__}"
            )
        missing = [m for m in self.modalities if m not in features]
        extra = [m for m in features if m not in self.in_dims]
        if missing or extra:
            raise ValueError(
                f"features must have exactly the keys {list(self.modalities)} the head was built "
                f"with, got {list(features)} (missing {missing}, unexpected {extra})"
            )
        batch_sizes: dict[str, int] = {}
        for m, dim in self.in_dims.items():
            x = check_floating(f"features[{m!r}]", features[m])
            check_shape(f"features[{m!r}]", x, ("B", dim))
            batch_sizes[m] = x.shape[0]
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"features must share the batch size B, got {batch_sizes}")
        check_same_device(**{f"features[{m!r}]": features[m] for m in self.modalities})
        first = self.modalities[0]
        device = self.similarity[first][0].weight.device
        if features[first].device != device:
            raise ValueError(
                f"features must be on the device of the head's parameters ({device}), got "
                f"features[{first!r}] on {features[first].device}; move the features or the "
                f"head with .to(device)"
            )

    def extra_repr(self) -> str:
        return (
            f"in_dims={self.in_dims}, feature_dim={self.feature_dim}, "
            f"num_classes={self.num_classes}"
        )
