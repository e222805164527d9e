"""The update-rule names are public and flat: gf.Adam, gf.chain, gf.schedules..."""

from __future__ import annotations

import gradfit as gf
from gradfit import update_rules

RULE_NAMES = ["SGD", "Adam", "AdamW", "RMSProp", "Adagrad", "Lion", "KerasOptimizer"]
COMPOSITION_NAMES = [
    "GradientTransform",
    "chain",
    "accumulate",
    "clip_by_global_norm",
    "clip_by_value",
]


def test_every_public_name_is_exported_flat():
    for name in ["UpdateRule", *RULE_NAMES, *COMPOSITION_NAMES]:
        assert name in gf.__all__, name
        assert name in update_rules.__all__, name
        assert getattr(gf, name) is getattr(update_rules, name)
    assert "schedules" in gf.__all__
    for name in gf.schedules.__all__:
        assert getattr(gf.schedules, name).__module__ == "gradfit.schedules"
    assert sorted(update_rules.__all__) == sorted(set(update_rules.__all__))


def test_every_rule_is_an_update_rule_with_a_docstring():
    for name in RULE_NAMES:
        cls = getattr(gf, name)
        assert issubclass(cls, gf.UpdateRule), name
        assert cls.__doc__ and "Args:" in cls.__doc__, name
