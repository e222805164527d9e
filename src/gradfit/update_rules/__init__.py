"""Update rules: how gradients change variables, inside the compiled step."""

from gradfit.update_rules.base import UpdateRule
from gradfit.update_rules.sgd import SGD

__all__ = ["SGD", "UpdateRule"]
