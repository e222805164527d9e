"""Every built-in update rule passes gradfit's UpdateRule contract.

Each class is three lines: that is all a user's rule needs too.
"""

from __future__ import annotations

import keras

import gradfit as gf
from gradfit import update_rules
from gradfit.testing import UpdateRuleContract


class TestSGD(UpdateRuleContract):
    def make_rule(self):
        return gf.SGD(0.1)


class TestSGDMomentum(UpdateRuleContract):
    def make_rule(self):
        return gf.SGD(0.1, momentum=0.9)


class TestSGDNesterov(UpdateRuleContract):
    def make_rule(self):
        return gf.SGD(0.1, momentum=0.9, nesterov=True)


class TestAdam(UpdateRuleContract):
    def make_rule(self):
        return update_rules.Adam(0.01)


class TestAdamAMSGrad(UpdateRuleContract):
    def make_rule(self):
        return update_rules.Adam(0.01, amsgrad=True)


class TestAdamW(UpdateRuleContract):
    def make_rule(self):
        return update_rules.AdamW(0.01, weight_decay=0.01)


class TestRMSProp(UpdateRuleContract):
    def make_rule(self):
        return update_rules.RMSProp(0.01)


class TestRMSPropCenteredMomentum(UpdateRuleContract):
    def make_rule(self):
        return update_rules.RMSProp(0.01, momentum=0.9, centered=True)


class TestAdagrad(UpdateRuleContract):
    def make_rule(self):
        return update_rules.Adagrad(0.1)


class TestLion(UpdateRuleContract):
    def make_rule(self):
        return update_rules.Lion(0.01, weight_decay=0.01)


class TestKerasAdam(UpdateRuleContract):
    def make_rule(self):
        return gf.KerasOptimizer(keras.optimizers.Adam(0.01))


class TestKerasSGD(UpdateRuleContract):
    def make_rule(self):
        return gf.KerasOptimizer(keras.optimizers.SGD(0.1, momentum=0.9))


class TestChainClipAdam(UpdateRuleContract):
    def make_rule(self):
        return update_rules.chain(update_rules.clip_by_global_norm(1.0), update_rules.Adam(0.01))


class TestAccumulateSGD(UpdateRuleContract):
    def make_rule(self):
        return update_rules.accumulate(2, gf.SGD(0.1, momentum=0.9))
