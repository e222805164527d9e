"""The smaller distribution case scripts, run in one fresh process (by conftest.py).

Usage: ``python _small_cases.py``. Runs the cases of ``_sharding_script.py``,
``_more_cases.py``, ``_review_cases.py`` and ``_keras_cond_cases.py`` one
module after another on the same two logical CPUs (``_devices.py``), which
saves a TensorFlow start for each; every module still runs alone with its
own ``python <script>``. The last line of stdout is one JSON object
``{module: its results}``.
"""

from __future__ import annotations

import json

import _devices  # noqa: F401  (the two logical CPUs, before TensorFlow starts)
import _keras_cond_cases
import _more_cases
import _review_cases
import _sharding_script

if __name__ == "__main__":
    modules = {
        "sharding": _sharding_script,
        "more": _more_cases,
        "review": _review_cases,
        "keras_cond": _keras_cond_cases,
    }
    print(json.dumps({name: module.results() for name, module in modules.items()}))
