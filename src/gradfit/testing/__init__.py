"""Tools to prove gradients and update rules right.

* :func:`check_gradients` and :func:`check_model_gradients` compare the
  reverse-mode gradients of a function (or of a loss with respect to a
  model's variables) with float64 finite differences, and raise an
  ``AssertionError`` with a readable report when they disagree.
* :class:`UpdateRuleContract` is a pytest-collectable base class: subclass it
  as ``TestMyRule`` with a ``make_rule()`` method, and your rule is checked
  against the contract every gradfit rule passes.
* :mod:`gradfit.testing.strategies` holds hypothesis strategies (it needs
  ``hypothesis``; nothing else here does).

Example::

    from gradfit.testing import UpdateRuleContract, check_gradients

    check_gradients(my_loss, [y_true, y_pred], argnums=1)

    class TestMyRule(UpdateRuleContract):
        def make_rule(self):
            return MyRule(0.01)
"""

from gradfit.testing.contract import UpdateRuleContract
from gradfit.testing.gradients import check_gradients, check_model_gradients

__all__ = ["UpdateRuleContract", "check_gradients", "check_model_gradients"]
