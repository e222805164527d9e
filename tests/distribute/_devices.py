"""Two logical CPU devices and a MirroredStrategy over them, once per process.

Imported first by the case scripts (``_sharding_script.py``, ``_more_cases.py``,
``_review_cases.py``, ``_keras_cond_cases.py``): the devices must be
configured before TensorFlow starts, and ``_small_cases.py`` runs all four
in one process, so whichever imports this first configures them.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

CPU = tf.config.list_physical_devices("CPU")[0]
if len(tf.config.get_logical_device_configuration(CPU) or []) != 2:
    tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
