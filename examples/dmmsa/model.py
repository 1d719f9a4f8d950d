"""The DMMSA reference model: ConFEDE's unimodal encoders and the library's decomposition head.

Paper section 3.2 (Fig. 3), which keeps ConFEDE's architecture (its appendix: the settings not
in Table 6 are ConFEDE's):

- text: a BERT-family model (``transformers``; a name or a local folder), pooled output; or, with
  precomputed token features, a Transformer encoder like audio's and vision's;
- audio, vision: ``Linear(d_in -> d_model)``, a learned CLS token and learned position
  embeddings, a Transformer encoder (8 heads, GELU, dropout 0.5), LayerNorm, mean over the valid
  time steps (the CLS position included, as in ConFEDE);
- :class:`mtobjectives.heads.DecompositionHead` on top: similarity/dissimilarity projectors,
  fusion MLP (Eq. 6), coarse classifier (Eq. 8), shared unimodal MLP.

For the unimodal pre-training stage (Table 6) each encoder also has a small regressor in
``pretrain_heads`` (ConFEDE's ``*Pretrain`` classifiers).

A batch is the dict that ``batching.MSADataset`` items collate to: ``"text_bert"`` ``[B, 3, L]``
(ids, attention mask, segment ids) or ``"text"`` ``[B, L, d_t]`` with optional
``"text_lengths"`` ``[B]``, ``"audio"`` ``[B, La, da]``, optional ``"audio_lengths"`` ``[B]``,
``"vision"`` ``[B, Lv, dv]``, optional ``"vision_lengths"`` ``[B]``; other keys (``"labels"``,
``"index"``) are ignored here. Only the configured modalities (``ModelConfig.modalities``) get an
encoder and an input of the decomposition head, and only their keys are needed: a text-only model
(``modalities=("T",)``) gives the features ``T_s``, ``T_d`` and reads neither audio nor vision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from dmmsa.checks import is_int
from mtobjectives.heads import DecompositionHead, DMMSAOutputs, mlp

if TYPE_CHECKING:
    from dmmsa.configs import ExperimentConfig, ModelConfig

__all__ = [
    "BertTextEncoder",
    "DMMSAModel",
    "SequenceEncoder",
    "UnimodalRegressor",
    "batch_to",
    "load_text_backbone",
]

#: For each modality: the batch key of its input and of its (optional) lengths.
INPUT_KEYS = {"A": ("audio", "audio_lengths"), "V": ("vision", "vision_lengths")}


class SequenceEncoder(nn.Module):
    """ConFEDE's audio/vision encoder: a Transformer over ``[CLS; Linear(x)]``, then a mean.

    ``Linear(d_in -> d_model)``, a learned CLS token in front, learned position embeddings,
    dropout, ``nn.TransformerEncoder`` (post-norm, GELU, ``batch_first``), ``LayerNorm``, and the
    mean over the CLS position and the first ``lengths[b]`` time steps. Positions past
    ``lengths`` are masked out of attention and of the mean (and zeroed first, so that padding
    can hold anything, even ``inf``, without changing the output). Steps that are padding in
    every row are dropped before the Transformer (exact; the cost follows the longest clip of
    the batch). With ``pool > 1`` each window of ``pool`` consecutive steps is first replaced by
    the mean of its valid steps (a CPU-cost option for long frame sequences; ``pool=1`` is
    ConFEDE's encoder).

    Shape:
        - x: ``[B, L, d_in]`` with ``ceil(L / pool) <= max_len``; lengths: ``[B]`` ints in
          ``[0, L]`` or ``None`` (all steps valid).
        - output: ``[B, d_model]``.
    """

    def __init__(
        self,
        in_dim: int,
        d_model: int,
        num_layers: int,
        *,
        nhead: int = 8,
        dim_feedforward: int | None = None,
        dropout: float = 0.5,
        max_len: int = 512,
        name: str = "x",
        pool: int = 1,
    ) -> None:
        super().__init__()
        if not is_int(pool) or pool < 1:
            raise ValueError(f"pool of the {name} encoder must be an int >= 1, got {pool!r}")
        self.pool = pool
        if d_model % nhead:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        if num_layers < 1:
            raise ValueError(f"num_layers of the {name} encoder must be >= 1, got {num_layers}")
        self.name, self.in_dim, self.max_len = name, in_dim, max_len
        self.out_dim = d_model
        self.proj = nn.Linear(in_dim, d_model)
        self.cls_token = nn.Parameter(torch.ones(1, 1, d_model))  # ConFEDE's initialisation
        self.position_embeddings = nn.Parameter(torch.zeros(1, max_len + 1, d_model))
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model,
            nhead,
            dim_feedforward or d_model,
            dropout,
            activation="gelu",
            batch_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        padding = self._padding_mask(x, lengths)  # [B, L] True where padded
        x = x.to(self.proj.weight.dtype)
        if padding is not None:
            x = x.masked_fill(padding.unsqueeze(-1), 0.0)
            # drop the steps that are padding in every row: exact, and the encoder's cost
            # follows the batch's longest sequence instead of the file's padded length
            keep = int(lengths.max()) if lengths.numel() else 0
            x, padding = x[:, :keep], padding[:, :keep]
        if self.pool > 1:
            x, padding = self._average_pool(x, padding)
        batch, steps = x.shape[:2]
        h = torch.cat([self.cls_token.expand(batch, -1, -1), self.proj(x)], dim=1)
        h = self.dropout(h + self.position_embeddings[:, : steps + 1])
        if padding is None:
            return self.norm(self.transformer(h)).mean(dim=1)
        padding = torch.cat([padding.new_zeros(batch, 1), padding], dim=1)  # CLS is never padded
        h = self.norm(self.transformer(h, src_key_padding_mask=padding))
        valid = (~padding).unsqueeze(-1).to(h.dtype)
        return (h * valid).sum(dim=1) / valid.sum(dim=1)

    def _padding_mask(self, x: Tensor, lengths: Tensor | None) -> Tensor | None:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.in_dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{self.name} must have shape [B, L, {self.in_dim}], got {shape}")
        if -(-x.shape[1] // self.pool) > self.max_len:
            raise ValueError(
                f"{self.name} has {x.shape[1]} time steps (pooled by {self.pool}) but the "
                f"model's max_len is {self.max_len}; raise ModelConfig.max_len"
            )
        if lengths is None:
            return None
        if lengths.shape != x.shape[:1]:
            raise ValueError(
                f"{self.name}_lengths must have shape [B] = [{x.shape[0]}], "
                f"got {tuple(lengths.shape)}"
            )
        if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > x.shape[1]):
            raise ValueError(
                f"{self.name}_lengths must lie in [0, {x.shape[1]}] (the padded length), got "
                f"values in [{int(lengths.min())}, {int(lengths.max())}]"
            )
        steps = torch.arange(x.shape[1], device=x.device)
        return steps.unsqueeze(0) >= lengths.to(x.device).unsqueeze(1)

    def _average_pool(self, x: Tensor, padding: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Mean over windows of ``pool`` valid steps: ``[B, L, d] -> [B, ceil(L / pool), d]``.

        Padded steps (already zeroed) are left out of each window's mean; a window without a
        valid step is padding of the pooled sequence.
        """
        batch, steps, width = x.shape
        windows = -(-steps // self.pool)
        extra = windows * self.pool - steps
        valid = (x.new_ones(batch, steps) if padding is None
                 else (~padding).to(x.dtype))
        if extra:
            x = nn.functional.pad(x, (0, 0, 0, extra))
            valid = nn.functional.pad(valid, (0, extra))
        sums = x.reshape(batch, windows, self.pool, width).sum(dim=2)
        counts = valid.reshape(batch, windows, self.pool).sum(dim=2)
        pooled = sums / counts.clamp_min(1.0).unsqueeze(-1)
        if padding is None and not extra:
            return pooled, None
        return pooled, counts == 0


def load_text_backbone(name_or_path: str) -> nn.Module:
    """A ``transformers`` model from a hub name or a local folder (offline when it is a folder)."""
    from transformers import AutoModel  # imported here: only the BERT text path needs it

    return AutoModel.from_pretrained(name_or_path)


class BertTextEncoder(nn.Module):
    """A BERT-family model reading ``text_bert`` ``[B, 3, L]`` and returning ``[B, hidden]``.

    Args:
        backbone: a ``transformers`` model (e.g. ``BertModel``) with ``config.hidden_size``.
        pooling: ``"pooler"`` (pooled output, ConFEDE), ``"cls"`` (first token's last hidden
            state) or ``"mean"`` (mean of the last hidden states over the attention mask).
    """

    def __init__(self, backbone: nn.Module, pooling: str = "pooler") -> None:
        super().__init__()
        if pooling not in ("pooler", "cls", "mean"):
            raise ValueError(f"text_pooling must be 'pooler' | 'cls' | 'mean', got {pooling!r}")
        self.backbone, self.pooling = backbone, pooling
        self.out_dim = int(backbone.config.hidden_size)

    def forward(self, text_bert: Tensor) -> Tensor:
        if not isinstance(text_bert, Tensor) or text_bert.dim() != 3 or text_bert.shape[1] != 3:
            shape = tuple(text_bert.shape) if isinstance(text_bert, Tensor) else type(text_bert)
            raise ValueError(f"text_bert must have shape [B, 3, L], got {shape}")
        ids, mask, segments = text_bert.long().unbind(dim=1)
        # drop the trailing columns that are padding in every row (exact: attention and the
        # mean skip them, and the positions of the kept tokens do not change)
        filled = mask.any(dim=0).nonzero()
        keep = int(filled.max()) + 1 if filled.numel() else 1
        ids, mask, segments = ids[:, :keep], mask[:, :keep], segments[:, :keep]
        out = self.backbone(input_ids=ids, attention_mask=mask, token_type_ids=segments)
        if self.pooling == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ValueError("the text model has no pooled output; use text_pooling='cls'")
            return pooled
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class DMMSAModel(nn.Module):
    """ConFEDE's encoders + :class:`~mtobjectives.heads.DecompositionHead` (DMMSA, Fig. 3).

    Args:
        config: a ``configs.ModelConfig`` (or an ``ExperimentConfig``, whose ``.model`` is used).
        text_backbone: a ready ``transformers`` model for the text (e.g. built from a
            ``BertConfig`` without downloading weights); ``None`` loads ``config.text_model``.
        reconstruction: give the head MISA's decoders (``mt.recipes.misa``), created last and
            from their own random stream, so that every other weight, and the random state
            after construction, equal those of a model without them.

    Attributes:
        encoders: ``{"T", "A", "V"}`` (the configured subset) -> encoder module.
        feature_dims: width of each encoder's output (``d_model``, or the BERT hidden size).
        head: the decomposition head (DMMSA outputs).
        pretrain_heads: per modality a regressor ``feature_dims[m] -> pretrain_hidden -> 1``.

    Shape:
        - forward(batch): the DMMSA outputs; ``"prediction"`` ``[B]``, ``"logits"`` ``[B, C]``,
          ``"features"`` ``{"T_s", ...: [B, feature_dim]}``, ``"unimodal"`` ``{...: [B]}``.
    """

    def __init__(
        self, config: ModelConfig | ExperimentConfig, *, text_backbone: nn.Module | None = None,
        reconstruction: bool = False,
    ) -> None:
        super().__init__()
        config = getattr(config, "model", config)
        self.config = config
        unknown = [m for m in config.modalities if m not in ("T", "A", "V")]
        if unknown or not config.modalities:
            raise ValueError(
                f"modalities must be a non-empty subset of ('T', 'A', 'V'), got {config.modalities}"
            )
        if config.text_source not in ("bert", "features"):
            raise ValueError(f"text_source must be 'bert' | 'features', got {config.text_source!r}")
        self.modalities = tuple(m for m in ("T", "A", "V") if m in config.modalities)
        #: Whether :meth:`freeze_encoders` fixed the encoders.
        self.encoders_frozen = False
        _check_input_dims(config, self.modalities)

        def sequence_encoder(in_dim: int, layers: int, name: str,
                             pool: int = 1) -> SequenceEncoder:
            return SequenceEncoder(
                in_dim, config.d_model, layers, nhead=config.nhead,
                dim_feedforward=config.dim_feedforward, dropout=config.encoder_dropout,
                max_len=config.max_len, name=name, pool=pool,
            )

        encoders: dict[str, nn.Module] = {}
        if "T" in self.modalities:
            if config.text_source == "bert":
                backbone = text_backbone or load_text_backbone(config.text_model)
                encoders["T"] = BertTextEncoder(backbone, config.text_pooling)
            else:
                encoders["T"] = sequence_encoder(config.text_dim, config.text_layers, "text")
        if "A" in self.modalities:
            encoders["A"] = sequence_encoder(config.audio_dim, config.audio_layers, "audio",
                                            config.audio_pool)
        if "V" in self.modalities:
            encoders["V"] = sequence_encoder(config.vision_dim, config.vision_layers, "vision",
                                             config.vision_pool)
        self.encoders = nn.ModuleDict(encoders)
        self.feature_dims = {m: int(enc.out_dim) for m, enc in self.encoders.items()}
        self.head = DecompositionHead(
            self.feature_dims,
            feature_dim=config.feature_dim,
            fusion_hidden=config.fusion_hidden,
            unimodal_hidden=config.unimodal_hidden,
            num_classes=config.num_classes,
            dropout=config.head_dropout,
        )
        self.pretrain_heads = nn.ModuleDict(
            {m: mlp(d, config.pretrain_hidden) for m, d in self.feature_dims.items()}
        )
        if reconstruction:  # MISA's decoders: every other weight, and the RNG after, unchanged
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + 1)
                self.head.decoders = nn.ModuleDict(
                    {m: nn.Linear(config.feature_dim, d) for m, d in self.feature_dims.items()}
                )

    def encode(self, batch: Mapping[str, Any], modalities: Sequence[str] | None = None) -> dict:
        """Each modality's pooled feature ``{m: [B, feature_dims[m]]}`` (all configured ones).

        A batch of cached encoder outputs (``batch["encoded"]``, ``--freeze-encoders``) gives
        them directly; fixed encoders (:meth:`freeze_encoders`) run without gradient.
        """
        wanted = self.modalities if modalities is None else tuple(modalities)
        if "encoded" in batch:
            return {m: batch["encoded"][m] for m in wanted}
        if self.encoders_frozen:
            with torch.no_grad():
                return self._encode_all(batch, wanted)
        return self._encode_all(batch, wanted)

    def _encode_all(self, batch: Mapping[str, Any], wanted: Sequence[str]) -> dict:
        features: dict[str, Tensor] = {}
        for m in wanted:
            if m not in self.encoders:
                raise ValueError(f"modality {m!r} is not in this model's {list(self.modalities)}")
            features[m] = self._encode_one(batch, m)
        return features

    def forward(self, batch: Mapping[str, Any]) -> DMMSAOutputs:
        """The DMMSA outputs (see :class:`~mtobjectives.heads.DMMSAOutputs`) of a batch."""
        return self.head(self.encode(batch))

    def pretrain_forward(
        self, batch: Mapping[str, Any], modalities: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """Unimodal pre-training predictions ``{m: [B]}`` (encoder + its pre-training regressor)."""
        features = self.encode(batch, modalities)
        return {m: self.pretrain_heads[m](h).squeeze(-1) for m, h in features.items()}

    def set_text_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze the text encoder (ConFEDE freezes it in the fusion stage); every
        encoder stays fixed after :meth:`freeze_encoders`."""
        if "T" in self.encoders:
            self.encoders["T"].requires_grad_(trainable and not self.encoders_frozen)

    def freeze_encoders(self) -> None:
        """Fix every encoder: no gradient, and evaluation mode (no dropout) from now on, also
        after ``train()``, so that their outputs are the same at every step."""
        self.encoders_frozen = True
        self.encoders.requires_grad_(False)
        self.encoders.eval()

    @property
    def fixed_prefix(self) -> str | None:
        """``"encoders."`` once the encoders are frozen: the state-dict entries that no longer
        change (checkpoints leave them out, ``dmmsa.checkpoint``); ``None`` before."""
        return "encoders." if self.encoders_frozen else None

    def train(self, mode: bool = True) -> DMMSAModel:
        super().train(mode)
        if self.encoders_frozen:
            self.encoders.eval()
        return self

    def _encode_one(self, batch: Mapping[str, Any], m: str) -> Tensor:
        if m == "T":
            if self.config.text_source == "bert":
                return self.encoders["T"](_require(batch, "text_bert", m))
            return self.encoders["T"](_require(batch, "text", m), _text_lengths(batch))
        key, lengths_key = INPUT_KEYS[m]
        return self.encoders[m](_require(batch, key, m), batch.get(lengths_key))


class UnimodalRegressor(nn.Module):
    """One encoder of a :class:`DMMSAModel` and its pre-training regressor, as one module.

    What the unimodal pre-training stage (Table 6) trains: its parameters are the encoder's and
    the regressor's only (they are shared with the model, not copied), and its forward is the
    model's :meth:`DMMSAModel.pretrain_forward` for the one modality.

    Shape:
        - forward(batch): ``{"prediction": [B]}``.
    """

    def __init__(self, model: DMMSAModel, modality: str) -> None:
        super().__init__()
        self.modality = modality
        self.encoder = model.encoders[modality]
        self.regressor = model.pretrain_heads[modality]
        self._pretrain_forward = model.pretrain_forward  # a bound method, not a submodule

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"prediction": self._pretrain_forward(batch, [self.modality])[self.modality]}


def _check_input_dims(config: ModelConfig, modalities: Sequence[str]) -> None:
    """Each used modality needs a real input width (``None`` marks data without it)."""
    fields = {"T": "text_dim", "A": "audio_dim", "V": "vision_dim"}
    for m in modalities:
        if m == "T" and config.text_source == "bert":
            continue  # the BERT model gives the width
        value = getattr(config, fields[m])
        if not is_int(value) or value < 1:
            raise ValueError(
                f"{fields[m]} must be an int > 0 for modality {m!r}, got {value!r}; a modality "
                "the data lacks must be left out of modalities (configs.with_input_dims(..., "
                "available=split.modalities) does this)"
            )


def _require(batch: Mapping[str, Any], key: str, modality: str) -> Tensor:
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a dict of tensors, got {type(batch).__name__}")
    if key not in batch:
        raise ValueError(
            f"batch has no {key!r}, which modality {modality!r} needs; got keys {sorted(batch)}"
        )
    return batch[key]


def _text_lengths(batch: Mapping[str, Any]) -> Tensor | None:
    """Valid text steps: ``text_lengths`` if given, else the ``text_bert`` mask, else all."""
    if "text_lengths" in batch:
        return batch["text_lengths"]
    if "text_bert" in batch:
        return batch["text_bert"][:, 1].long().sum(dim=1)
    return None


def batch_to(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor of a (nested) batch dict to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: batch_to(v, device) for k, v in batch.items()}
    return batch
