"""Reading a batch: the keys, labels and features the recipes' terms take, checked.

Shared by every recipe (:mod:`mtobjectives.recipes`): each reader checks on the host what it
reads (the key is there, floating point, the shape, the device) and names what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mtobjectives._validation import check_floating, check_shape

__all__ = ["FEATURE_NAMES"]

#: The decomposed features of DMMSA (keys of ``outputs["features"]`` and ``outputs["unimodal"]``).
FEATURE_NAMES: tuple[str, ...] = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")


def _required(mapping: Mapping[str, Any], where: str, key: str, hint: str = "") -> Any:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{where} must be a mapping (dict), got {type(mapping).__name__}")
    if key not in mapping:
        raise ValueError(
            f"{where} is missing the required key {key!r} {hint}".rstrip()
            + f"; got keys {sorted(mapping)}"
        )
    return mapping[key]


def _label(targets: Mapping[str, Any], key: str, prediction: Tensor) -> Tensor:
    """``targets[key]``: floating point, of shape ``[B]`` and on the device of ``prediction``.

    Checks only what is known on the host (no device synchronisation); the values are checked
    once per batch by :func:`_check_dmmsa_batch`.
    """
    name = f"targets[{key!r}]"
    label = _required(targets, "targets", key)
    check_floating(name, label)
    check_shape(name, label, [prediction.shape[0]])
    if label.device != prediction.device:
        raise ValueError(
            f"{name} must be on the device of the outputs ({prediction.device}), "
            f"got {label.device}"
        )
    return label


def _prediction_and_label(
    outputs: Mapping[str, Any], targets: Mapping[str, Any]
) -> tuple[Tensor, Tensor]:
    """``outputs["prediction"]`` [B] and ``targets["M"]`` [B], for a regression term.

    The label is returned in the prediction's dtype, but at least float32: a finite label cast
    to float16 can overflow (float16 holds at most 65504), so the regression terms of half
    precision predictions are computed, and returned, in float32. Never bin the label returned
    here: a cast can move a value across a class edge (float32 0.1 is above the float64 edge
    0.1); classes come from :func:`_prediction_and_raw_label`.
    """
    prediction, y = _prediction_and_raw_label(outputs, targets)
    return prediction, y.to(torch.promote_types(prediction.dtype, torch.float32))


def _prediction_and_raw_label(
    outputs: Mapping[str, Any], targets: Mapping[str, Any]
) -> tuple[Tensor, Tensor]:
    """``outputs["prediction"]`` [B] and ``targets["M"]`` [B] in the label's own dtype.

    For the terms that bin the label (MSC, label-aware positives): the binning compares the
    label, as given, with the edges rounded to the label's dtype, exactly as
    ``binning(targets["M"])`` does.
    """
    prediction = _required(outputs, "outputs", "prediction")
    check_floating("outputs['prediction']", prediction)
    if prediction.dim() == 2 and prediction.shape[-1] == 1:
        raise ValueError(
            f"outputs['prediction'] must have shape [B], got {tuple(prediction.shape)}; "
            f"squeeze the last dimension (a [B, 1] prediction would broadcast against [B] labels)"
        )
    check_shape("outputs['prediction']", prediction, ["B"])
    if prediction.shape[0] == 0:
        raise ValueError(
            "outputs['prediction'] must hold at least one sample (the DMMSA terms are means "
            "over the batch), got an empty batch of shape (0,)"
        )
    return prediction, _label(targets, "M", prediction)


def _features(
    outputs: Mapping[str, Any], key: str, shape: list[int | None], hint: str
) -> dict[str, Tensor]:
    """The present entries of ``outputs[key]`` (a subset of :data:`FEATURE_NAMES`), checked."""
    features = _required(outputs, "outputs", key, hint)
    if not isinstance(features, Mapping):
        raise TypeError(f"outputs[{key!r}] must be a dict, got {type(features).__name__}")
    unknown = [name for name in features if name not in FEATURE_NAMES]
    if unknown:
        raise ValueError(
            f"outputs[{key!r}] has unknown keys {unknown}; expected a subset of "
            f"{list(FEATURE_NAMES)}"
        )
    for name, value in features.items():
        check_floating(f"outputs[{key!r}][{name!r}]", value)
        check_shape(f"outputs[{key!r}][{name!r}]", value, shape)
    return {name: features[name] for name in FEATURE_NAMES if name in features}
