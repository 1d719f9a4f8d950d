"""What a recipe reads from a batch, in one place the code checks (:class:`Requirements`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Requirements"]


@dataclass(frozen=True)
class Requirements:
    """The outputs and targets a recipe reads, each with what it is.

    :meth:`check` raises a :class:`ValueError` that names the missing key and the recipe, so a
    batch built for another objective fails on its first call with the reason.

    Attributes:
        recipe: the recipe's name (``"self_mm"``, ...).
        outputs: ``outputs`` keys it needs -> what each holds.
        targets: ``targets`` keys it needs -> what each holds.
        optional_targets: ``targets`` keys it reads when present.
        training_targets: ``targets`` keys it needs in training mode only (e.g. Self-MM's
            sample index, which evaluation batches do not carry).

    Example:
        >>> from mtobjectives.recipes import Requirements
        >>> needs = Requirements("mine", outputs={"prediction": "[B]"}, targets={"M": "[B]"})
        >>> needs.check({"prediction": 0}, {})
        Traceback (most recent call last):
            ...
        ValueError: recipe 'mine' needs targets['M'] ([B]); the batch has targets keys []
    """

    recipe: str
    outputs: Mapping[str, str] = field(default_factory=dict)
    targets: Mapping[str, str] = field(default_factory=dict)
    optional_targets: Mapping[str, str] = field(default_factory=dict)
    training_targets: Mapping[str, str] = field(default_factory=dict)

    def check(self, outputs: Mapping[str, Any], targets: Mapping[str, Any], *,
              training: bool = True, outputs_needed: tuple[str, ...] | None = None) -> None:
        """Raise :class:`ValueError` naming the first key the batch lacks.

        Args:
            outputs, targets: the batch.
            training: also check :attr:`training_targets`.
            outputs_needed: the subset of :attr:`outputs` needed here (default: all).
        """
        for where, given in (("outputs", outputs), ("targets", targets)):
            if not isinstance(given, Mapping):
                raise TypeError(f"{where} must be a mapping (dict), got {type(given).__name__}")
        wanted_outputs = self.outputs if outputs_needed is None else {
            key: self.outputs[key] for key in outputs_needed}
        needed = [("outputs", outputs, wanted_outputs), ("targets", targets, self.targets)]
        if training:
            needed.append(("targets", targets, self.training_targets))
        for where, given, keys in needed:
            for key, meaning in keys.items():
                if key not in given:
                    raise ValueError(
                        f"recipe {self.recipe!r} needs {where}[{key!r}] ({meaning}); the batch "
                        f"has {where} keys {sorted(map(str, given))}")
