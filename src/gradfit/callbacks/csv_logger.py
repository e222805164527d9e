"""CSVLogger: one row of epoch logs per epoch, in a CSV file."""

from __future__ import annotations

import csv
import os
import warnings

from gradfit import _validation as v
from gradfit.callbacks.base import Callback, Logs


class CSVLogger(Callback):
    """Writes each epoch's logs as a row of a CSV file.

    The first column is ``epoch`` (from 0); the others are the first epoch's
    log keys in the order the Trainer logs them (``loss``, metrics,
    ``val_*``, ``lr``). Values are written in full precision (``repr``), so
    reading a row back gives the History's floats exactly. The file is
    opened, written and closed at every epoch's end, so a run that dies
    keeps every finished epoch's row.

    With ``append=True`` an existing file is continued: its header is kept
    (not repeated) and fixes the columns; a log key the header lacks is left
    out with a warning, and a column the logs lack is left empty.

    Args:
        path: The CSV file.
        append: Continue an existing file instead of overwriting it.
        separator: The one-character field delimiter.

    Example::

        trainer.fit(x, y, epochs=10, callbacks=[gf.callbacks.CSVLogger("training.csv")])
    """

    def __init__(
        self, path: str | os.PathLike[str], append: bool = False, separator: str = ","
    ) -> None:
        super().__init__()
        self.path = v.path("path", path)
        self.append = v.boolean("append", append)
        if not isinstance(separator, str):
            raise TypeError(
                f"`separator` must be a one-character string. {v.received('separator', separator)}"
            )
        if len(separator) != 1 or separator in "\r\n\"'":
            raise ValueError(
                "`separator` must be one character, not a quote or a line break. "
                f"{v.received('separator', separator)}"
            )
        self.separator = separator
        self.keys: list[str] | None = None
        self._warned = False

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Truncates the file, or reads the columns of the file to continue."""
        self.keys = None
        self._warned = False
        if not self.append or not os.path.exists(self.path):
            with open(self.path, "w", newline="", encoding="utf-8"):
                pass
            return
        with open(self.path, newline="", encoding="utf-8") as file:
            header = next(csv.reader(file, delimiter=self.separator), None)
        if header:
            self.keys = header[1:] if header[0] == "epoch" else header

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Appends the epoch's row (and the header, for a new file) and closes the file."""
        logs = logs or {}
        write_header = self.keys is None
        if self.keys is None:
            self.keys = list(logs)
        extra = [key for key in logs if key not in self.keys]
        if extra and not self._warned:
            warnings.warn(
                f"CSVLogger: the logs hold {extra}, which the columns of {self.path!r} "
                f"({self.keys}) lack; these values are not written.",
                UserWarning,
                stacklevel=2,
            )
            self._warned = True
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, delimiter=self.separator, lineterminator="\n")
            if write_header:
                writer.writerow(["epoch", *self.keys])
            writer.writerow([epoch, *(logs.get(key, "") for key in self.keys)])
