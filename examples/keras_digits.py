"""A Keras model trained by gradfit: handwritten digits, accuracy, class weights, validation.

The Keras guide "Writing a training loop from scratch" trains a small
dense network on digits; here the same kind of model is a plain
``keras.Sequential`` (with Dropout and BatchNormalization, which need
``training=True`` in training steps) handed to ``gf.Trainer`` as it is.
The data is scikit-learn's bundled 8x8 digits (1,797 images, no
download); classes 0-4 are made rare in the training set and weighed up
with ``class_weight``. Each epoch prints the training loss and accuracy and
the validation accuracy::

    python examples/keras_digits.py --epochs 20
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from sklearn.datasets import load_digits

import gradfit as gf


def make_data(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Digits scaled to [0, 1]: a training set where classes 0-4 are rare, and a validation set."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    x_train, y_train, x_val, y_val = x[:1400], y[:1400], x[1400:], y[1400:]
    rare = y_train < 5
    keep = ~rare | (np.arange(len(y_train)) % 3 == 0)  # two in three rare examples dropped
    return x_train[keep], y_train[keep], x_val, y_val


def make_model(seed: int = 0) -> keras.Model:
    """A dense network with BatchNormalization and Dropout, outputs as logits."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    x_train, y_train, x_val, y_val = make_data()
    counts = np.bincount(y_train, minlength=10)
    class_weight = {c: float(counts.max() / counts[c]) for c in range(10)}

    trainer = gf.Trainer(
        make_model(),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        gf.Adam(1e-3),
        metrics=["accuracy"],
    )
    history = trainer.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=64,
        seed=0,
        class_weight=class_weight,
        validation_data=(x_val, y_val),
    )
    logs = history.history
    for epoch in range(len(logs["loss"])):
        print(
            f"Epoch {epoch:2d}: loss={logs['loss'][epoch]:.4f} "
            f"accuracy={logs['accuracy'][epoch]:.4f} "
            f"val_accuracy={logs['val_accuracy'][epoch]:.4f}"
        )
    rare = y_val < 5
    predicted = np.argmax(trainer.predict(x_val), axis=-1)
    rare_accuracy = np.mean(predicted[rare] == y_val[rare])
    print(f"Validation accuracy on the rare classes 0-4: {rare_accuracy:.4f}")


if __name__ == "__main__":
    main()
