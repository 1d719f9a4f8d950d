"""The variants of ``python -m dmmsa.compare``: their flags, their row labels, and the label of
the pre-trained text model's row. Read by :mod:`dmmsa.compare` and :mod:`dmmsa.compare_tables`.
"""

from __future__ import annotations

__all__ = ["TEXT_ALONE_LABEL", "VARIANT_FLAGS", "VARIANT_NAMES", "variant_label"]

VARIANT_FLAGS: dict[str, list[str]] = {
    "dmmsa": [],
    "baseline": ["--objective", "baseline"],
    "no-msc": ["--no-msc"],
    "no-cl": ["--no-cl"],
    "no-gdwg": ["--no-gdwg"],
    # the candidates of the objective study (docs/results.md, "Study protocol")
    "sg": ["--cl-detach-anchor"],
    "warmup": ["--cl-warmup", "3"],
    "labelpos": ["--cl-label-positives"],
    "uw": ["--weighting", "uncertainty"],
    "sg-warmup": ["--cl-detach-anchor", "--cl-warmup", "3"],
    "sg-labelpos": ["--cl-detach-anchor", "--cl-label-positives"],
    "sg-warmup-labelpos": ["--cl-detach-anchor", "--cl-warmup", "3", "--cl-label-positives"],
    "uw-sg": ["--weighting", "uncertainty", "--cl-detach-anchor"],
    # the field's objectives (mt.recipes), each with its paper's defaults
    "plain": ["--objective", "plain"],
    "confede": ["--objective", "confede"],
    "confede-intended": ["--objective", "confede", "--confede-sampler", "intended"],
    "self_mm": ["--objective", "self_mm"],
    "misa": ["--objective", "misa"],
}
VARIANT_NAMES = {"dmmsa": "DMMSA", "baseline": "baseline (SmoothL1 fused + unimodal)",
                 "no-msc": "DMMSA w/o MSC", "no-cl": "DMMSA w/o CL", "no-gdwg": "DMMSA w/o GDWG",
                 "sg": "DMMSA + sg", "warmup": "DMMSA + warmup", "labelpos": "DMMSA + labelpos",
                 "uw": "DMMSA + uw", "sg-warmup": "DMMSA + sg + warmup",
                 "sg-labelpos": "DMMSA + sg + labelpos",
                 "sg-warmup-labelpos": "DMMSA + sg + warmup + labelpos",
                 "uw-sg": "DMMSA + uw + sg", "plain": "plain (SmoothL1 fused + unimodal)",
                 "confede": "ConFEDE's objective (its sampler as written)",
                 "confede-intended": "ConFEDE's objective (its sampler as intended)",
                 "self_mm": "Self-MM's objective", "misa": "MISA's objective"}
TEXT_ALONE_LABEL = "pre-trained text model alone"


def variant_label(name: str) -> str:
    """The row label of a variant (its own name for a variant defined with ``--variant``)."""
    return VARIANT_NAMES.get(name, name)
