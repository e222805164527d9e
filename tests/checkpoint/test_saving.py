"""saving: SavedModel export, whole-trainer checkpoints that resume bitwise, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit import saving
from gradfit.checkpoint import io as checkpoint_io
from gradfit.models import variables_by_path


def regression(n=64, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, np.sin(x).sum(axis=1, keepdims=True).astype(np.float32)


def tutorial_data(n=100):
    x = np.random.default_rng(1).normal(size=n).astype(np.float32)
    return x, 3 * x + 2


def snapshot(trainer):
    """Every value a trainer checkpoint holds, by name."""
    values = {f"model/{k}": var.numpy() for k, var in variables_by_path(trainer.model).items()}
    rule = variables_by_path(trainer.update_rule)
    values.update({f"rule/{k}": var.numpy() for k, var in rule.items()})
    values["generator"] = trainer.generator.state.numpy()
    return values


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def files(directory):
    return sorted(os.listdir(directory))


# -- export ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_model", "data"),
    [
        (lambda: gf.LinearModel(weight_init=5.0, bias_init=0.0), tutorial_data),
        (lambda: gf.MLP((8, 4), activation="tanh", seed=3), regression),
    ],
    ids=["linear-tutorial", "mlp"],
)
def test_exported_model_reloads_and_predicts_bitwise_identically(tmp_path, make_model, data):
    x, y = data()
    model = make_model()
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.1))
    trainer.fit(x, y, epochs=3, batch_size=32)

    path = saving.export_model(model, tmp_path / "export")
    assert path == str(tmp_path / "export")
    loaded = tf.saved_model.load(path)

    # The original's predictions: its compiled call, as Trainer.predict runs it.
    expected = trainer.predict(x)
    assert np.array_equal(tf.function(model.__call__)(tf.constant(x)).numpy(), expected)
    assert np.array_equal(loaded(x).numpy(), expected)
    assert np.array_equal(loaded(tf.constant(x[:5])).numpy(), expected[:5])
    served = loaded.signatures["serving_default"](x=tf.constant(x))
    assert np.array_equal(served["output_0"].numpy(), expected)
    # Eager calls may differ in the last bit: TensorFlow fuses ops in graphs (oneDNN on CPU).
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    # The variables travel with it, under `loaded.model`.
    exported = tf.train.TrackableView(loaded.model).descendants()
    exported_values = [var.numpy().tobytes() for var in exported if isinstance(var, tf.Variable)]
    assert sorted(exported_values) == sorted(var.numpy().tobytes() for var in model.variables)


def test_export_with_an_explicit_signature_and_bad_arguments(tmp_path):
    # An unbuilt model needs a signature: its input shape is unknown.
    with pytest.raises(ValueError, match=r"`model` has not been built.*input_signature"):
        saving.export_model(gf.LinearModel(), tmp_path / "a")
    model = gf.LinearModel(weight_init=2.0, bias_init=1.0)
    saving.export_model(model, tmp_path / "b", input_signature=tf.TensorSpec([None], tf.float32))
    loaded = tf.saved_model.load(str(tmp_path / "b"))
    assert np.array_equal(loaded(tf.constant([1.0, 3.0])).numpy(), [3.0, 7.0])

    with pytest.raises(TypeError, match=r"`input_signature`.*Received: input_signature=\[3\]"):
        saving.export_model(model, tmp_path / "c", input_signature=[3])
    with pytest.raises(TypeError, match=r"`model` must be a gradfit Model.*Received: model='m'"):
        saving.export_model("m", tmp_path / "d")
    with pytest.raises(TypeError, match=r"`path`.*Received: path=None"):
        saving.export_model(model, None)


# -- trainer checkpoints -----------------------------------------------------


def make_trainer(hidden=8, rule=None):
    return gf.Trainer(gf.MLP((hidden,), seed=1), gf.L2(), rule or gf.Adam(1e-2))


def test_restored_trainer_continues_bitwise_like_an_uninterrupted_run(tmp_path):
    x, y = regression()
    fit = {"batch_size": 16, "shuffle": True}
    uninterrupted = make_trainer()
    uninterrupted.fit(x, y, epochs=4, seed=7, **fit)

    first = make_trainer()
    first.fit(x, y, epochs=2, seed=7, **fit)  # the seed only here; the generator carries on
    path = saving.save_trainer(first, tmp_path / "run" / "trainer")
    assert path == str(tmp_path / "run" / "trainer")
    assert files(tmp_path / "run") == ["trainer.data-00000-of-00001", "trainer.index"]

    second = make_trainer()  # fresh: model and Adam slots not built yet
    assert not second.model.variables
    saving.restore_trainer(second, path)
    assert_bitwise_equal(snapshot(second), snapshot(first))
    assert int(second.update_rule.iterations) == 2 * 4
    second.fit(x, y, epochs=2, **fit)

    assert_bitwise_equal(snapshot(second), snapshot(uninterrupted))


def test_restore_rejects_a_mismatched_structure_and_changes_nothing(tmp_path):
    x, _ = regression(n=8)
    saved = make_trainer()
    saved.model(x)
    saved.update_rule.build(saved.model.trainable_variables)
    path = saving.save_trainer(saved, tmp_path / "ckpt")

    wider = make_trainer(hidden=9)
    wider.model(x)  # built: a failed restore must leave its values alone
    before = snapshot(wider)
    with pytest.raises(ValueError, match=r"does not match.*layers/0/W has shape \[3, 8\]") as err:
        saving.restore_trainer(wider, path)
    assert repr(path) in str(err.value)
    after = snapshot(wider)  # the rule's state may have been built, with initial values
    assert_bitwise_equal({k: after[k] for k in before}, before)

    with pytest.raises(ValueError, match=r"checkpoint has update_rule/_slots/0/m"):
        saving.restore_trainer(make_trainer(rule=gf.SGD(0.1)), path)

    features = make_trainer()
    features.model(x[:, :2])  # built for 2 features, the checkpoint for 3
    with pytest.raises(ValueError, match=r"per-example shape \(3,\).*built for.*\(2,\)"):
        saving.restore_trainer(features, path)


def test_missing_corrupt_and_model_only_checkpoints_are_clear_errors(tmp_path):
    trainer = make_trainer()
    missing = tmp_path / "nothing"
    with pytest.raises(FileNotFoundError, match=r"No checkpoint at `path`.*nothing"):
        saving.restore_trainer(trainer, missing)
    with pytest.raises(FileNotFoundError, match=r"`path` is a directory"):
        saving.restore_trainer(trainer, tmp_path)

    (tmp_path / "junk.index").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"not a readable checkpoint.*junk"):
        saving.restore_trainer(trainer, tmp_path / "junk")

    model = gf.LinearModel(weight_init=4.0)
    model(tf.zeros([2]))
    weights = saving.save_model(model, tmp_path / "weights")
    with pytest.raises(ValueError, match=r"only a model's variables.*restore_model"):
        saving.restore_trainer(trainer, weights)

    with pytest.raises(TypeError, match=r"`trainer` must be a gradfit Trainer"):
        saving.save_trainer(model, tmp_path / "x")
    with pytest.raises(ValueError, match=r"`path` must be a non-empty path"):
        saving.save_trainer(trainer, "")
    with pytest.raises(TypeError, match=r"`update_latest`"):
        saving.save_model(model, tmp_path / "y", update_latest="yes")


def test_restore_model_reads_model_and_trainer_checkpoints(tmp_path):
    x, y = tutorial_data(16)
    trainer = gf.Trainer(gf.LinearModel(weight_init=5.0), gf.L2(), gf.SGD(0.1))
    trainer.fit(x, y, epochs=2)
    weights = saving.save_model(trainer.model, tmp_path / "weights")
    whole = saving.save_trainer(trainer, tmp_path / "whole")
    for path in (weights, whole):
        fresh = gf.LinearModel()
        saving.restore_model(fresh, path)
        assert fresh.input_shape == ()
        assert fresh.W.numpy() == trainer.model.W.numpy()
        assert fresh.b.numpy() == trainer.model.b.numpy()
    with pytest.raises(ValueError, match=r"model's structure.*checkpoint has model/layers"):
        saving.restore_model(gf.LinearModel(), saving.save_model(gf_mlp_built(), tmp_path / "m"))
    # Plain TensorFlow reads the same files.
    model = gf.LinearModel(weight_init=0.0)
    model(x)
    tf.train.Checkpoint(model=model).read(whole).expect_partial()
    assert model.W.numpy() == trainer.model.W.numpy()


def gf_mlp_built():
    model = gf.MLP((2,), seed=0)
    model(tf.zeros([1]))
    return model


# -- atomic writes -----------------------------------------------------------


def test_overwriting_a_checkpoint_leaves_exactly_its_files(tmp_path):
    model = gf.LinearModel(weight_init=1.0)
    model(tf.zeros([2]))
    saving.save_model(model, tmp_path / "m", update_latest=True)
    model.W.assign(2.0)
    saving.save_model(model, tmp_path / "m", update_latest=True)
    assert files(tmp_path) == ["checkpoint", "m.data-00000-of-00001", "m.index"]
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "m")
    fresh = gf.LinearModel()
    saving.restore_model(fresh, tmp_path)  # a directory: its latest checkpoint
    assert fresh.W.numpy() == 2.0


def test_a_save_interrupted_mid_way_never_leaves_a_corrupt_latest(tmp_path, monkeypatch):
    model = gf.LinearModel(weight_init=1.0)
    model(tf.zeros([2]))
    saving.save_model(model, tmp_path / "best", update_latest=True)

    def latest_value():
        fresh = gf.LinearModel()
        saving.restore_model(fresh, tmp_path)
        return float(fresh.W.numpy())

    # Dies while writing: the old checkpoint stays the latest, untouched.
    def broken_write(self, prefix, options=None):
        open(prefix + ".index", "wb").close()  # a partial file under the temporary name
        raise OSError("disk full")

    model.W.assign(2.0)
    with monkeypatch.context() as patch:
        patch.setattr(tf.train.Checkpoint, "write", broken_write)
        with pytest.raises(OSError, match="disk full"):
            saving.save_model(model, tmp_path / "best", update_latest=True)
    assert latest_value() == 1.0
    assert files(tmp_path) == ["best.data-00000-of-00001", "best.index", "checkpoint"]

    # Dies while moving the new files over the old ones: the latest pointer names the
    # complete temporary copy of the new checkpoint, never a half-replaced one.
    real_place = checkpoint_io._place

    def dies_after_one_file(source, target, staging, *, keep_source):
        real_place(source, target, staging, keep_source=keep_source)
        raise KeyboardInterrupt

    model.W.assign(3.0)
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_io, "_place", dies_after_one_file)
        with pytest.raises(KeyboardInterrupt):
            saving.save_model(model, tmp_path / "best", update_latest=True)
    assert not (tmp_path / "best.index").exists()  # no index: never a mismatched pair
    assert latest_value() == 3.0

    # The next save completes and cleans up what the interrupted one left.
    model.W.assign(4.0)
    saving.save_model(model, tmp_path / "best", update_latest=True)
    assert files(tmp_path) == ["best.data-00000-of-00001", "best.index", "checkpoint"]
    assert latest_value() == 4.0


def test_trainer_save_and_restore_methods_round_trip(tmp_path):
    x = np.random.default_rng(1).normal(size=(32, 3)).astype(np.float32)
    y = x[:, :1] * 2.0
    first = gf.Trainer(gf.MLP((4,), seed=0), gf.L2(), gf.Adam(1e-2))
    first.fit(x, y, epochs=2, batch_size=8, seed=5)
    path = first.save(str(tmp_path / "trainer"))
    second = gf.Trainer(gf.MLP((4,), seed=1), gf.L2(), gf.Adam(1e-2))
    second.restore(path)
    first.fit(x, y, epochs=1, batch_size=8)
    second.fit(x, y, epochs=1, batch_size=8)
    for a, b in zip(first.model.variables, second.model.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(first.update_rule.iterations.numpy()) == int(second.update_rule.iterations.numpy())
