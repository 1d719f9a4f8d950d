r"""The field's objectives side by side, each matched to its original code.

One factory per paper, each returning a :class:`~mtobjectives.objective.MultiTaskObjective` to
be called as ``objective(outputs, targets)``; changing a model's objective is one line:

.. list-table::
   :header-rows: 1

   * - recipe
     - what it is
     - matched to
   * - :func:`dmmsa`
     - DMMSA's Eq. 5: MSR + MSC + GDWG-weighted Uni and CL
     - the DMMSA paper
   * - :func:`confede`
     - MSE + 0.1 NT-Xent + 0.01 unimodal MSE, with its sample selector :class:`ConFEDESampler`
     - ConFEDE's public code
   * - :func:`self_mm`
     - weighted L1 on generated unimodal labels (:class:`SelfMMLabels`)
     - MMSA 2.2.1 ``SELF_MM``
   * - :func:`misa`
     - MSE + 0.1 difference + 0.3 CMD + 1.0 reconstruction
     - MMSA 2.2.1 ``MISA``
   * - :func:`plain`
     - fused + unimodal smooth L1, fixed weights
     - ConFEDE's and MMSA's regression losses

Each recipe states what it reads in its ``REQUIREMENTS`` (:func:`requirements`), and a batch
that lacks a key fails with a :class:`ValueError` naming the key and the recipe. Retrieved rows
(``targets["num_anchors"]``, ConFEDE's layout) are read by ConFEDE's objective only; the others
see the anchors and give the same result with or without such rows.
"""

from __future__ import annotations

from mtobjectives.recipes import confede as _confede_module
from mtobjectives.recipes import dmmsa as _dmmsa_module
from mtobjectives.recipes import misa as _misa_module
from mtobjectives.recipes import plain as _plain_module
from mtobjectives.recipes import self_mm as _self_mm_module
from mtobjectives.recipes._requirements import Requirements
from mtobjectives.recipes.confede import ConFEDESampler, confede, confede_contrastive
from mtobjectives.recipes.dmmsa import dmmsa
from mtobjectives.recipes.misa import misa
from mtobjectives.recipes.plain import plain
from mtobjectives.recipes.self_mm import SelfMMLabels, self_mm

__all__ = ["RECIPES", "ConFEDESampler", "Requirements", "SelfMMLabels", "confede",
           "confede_contrastive", "dmmsa", "misa", "plain", "requirements", "self_mm"]

#: Every recipe by name.
RECIPES = {"dmmsa": dmmsa, "confede": confede, "self_mm": self_mm, "misa": misa,
           "plain": plain}

_REQUIREMENTS = {"dmmsa": _dmmsa_module.REQUIREMENTS, "confede": _confede_module.REQUIREMENTS,
                 "self_mm": _self_mm_module.REQUIREMENTS, "misa": _misa_module.REQUIREMENTS,
                 "plain": _plain_module.REQUIREMENTS}


def requirements(name: str) -> Requirements:
    """What recipe ``name`` reads from a batch (its outputs and targets, each with a meaning).

    Example:
        >>> from mtobjectives import recipes
        >>> sorted(recipes.requirements("self_mm").training_targets)
        ['index']
    """
    if name not in _REQUIREMENTS:
        raise ValueError(f"name must be one of {sorted(_REQUIREMENTS)}, got {name!r}")
    return _REQUIREMENTS[name]
