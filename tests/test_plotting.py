"""gradfit.plotting draws what it is given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

import gradfit as gf
from gradfit import plotting


def fitted():
    x = np.linspace(-1, 1, 20).astype(np.float32)
    y = 3 * x + 2
    record = gf.RecordVariables()
    trainer = gf.Trainer(gf.LinearModel(weight_init=5.0, bias_init=0.0), gf.L2(), gf.SGD(0.1))
    history = trainer.fit(x, y, epochs=4, callbacks=[record], validation_data=(x, y))
    return x, y, trainer, record, history


def test_plot_fit_scatters_data_and_each_prediction_series():
    x, y, trainer, _, _ = fitted()
    ax = plotting.plot_fit(x, y, {"before": 5 * x, "after": trainer.predict(x)})
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["data", "before", "after"]
    offsets = ax.collections[2].get_offsets()
    np.testing.assert_allclose(offsets[:, 1], trainer.predict(x), rtol=1e-6)
    plt.close(ax.figure)


def test_plot_variables_draws_values_per_epoch_and_true_lines():
    _, _, _, record, _ = fitted()
    ax = plotting.plot_variables(record, true_values={"W": 3.0, "b": 2.0})
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"W", "true W", "b", "true b"}
    np.testing.assert_allclose(lines["W"].get_ydata(), [float(w) for w in record.values["W"][:-1]])
    assert list(lines["true b"].get_ydata()) == [2.0] * 4
    plt.close(ax.figure)


def test_plot_history_draws_every_key_on_given_axes():
    _, _, _, _, history = fitted()
    fig, ax = plt.subplots()
    assert plotting.plot_history(history, ax=ax) is ax
    assert sorted(line.get_label() for line in ax.get_lines()) == ["loss", "lr", "val_loss"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), history.history["loss"])
    plt.close(fig)
