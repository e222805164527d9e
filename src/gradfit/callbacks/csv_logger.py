"""CSVLogger: one row of epoch logs per epoch, in a CSV file."""

from __future__ import annotations

import contextlib
import csv
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from gradfit import _paths, errors
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
    out with a warning, and a column the logs lack is left empty. Use it in
    a run that may resume from a ``BackupAndRestore``: the backup saves the
    last epoch written, and a resumed fit drops the rows of later epochs (a
    run killed between writing a row and saving the backup), so the file
    holds one row per epoch.

    The path is checked before the first step (a file, in a directory that
    exists or can be created, writable; with ``append``, a UTF-8 CSV file);
    a write that fails during the fit raises :class:`gradfit.WriteError`.

    Args:
        path: The CSV file.
        append: Continue an existing file instead of overwriting it.
        separator: The one-character field delimiter.

    Example::

        trainer.fit(x, y, epochs=10, callbacks=[gf.callbacks.CSVLogger("training.csv")])
    """

    writes_files = True  # (only the chief of a multi-worker job writes)

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
        self.last_epoch = -1
        """The last epoch whose row this fit wrote (or, resumed, the backup's)."""
        self._warned = False

    def check_run(self) -> None:
        """Checks, before anything changes, that the file can be written (and continued)."""
        _paths.check_file("path", self.path, self.path)
        if self.append and os.path.exists(self.path):
            self._read_header()

    def _read_header(self) -> list[str] | None:
        try:
            with open(self.path, newline="", encoding="utf-8") as file:
                return next(csv.reader(file, delimiter=self.separator), None)
        except (UnicodeDecodeError, csv.Error) as err:
            raise ValueError(
                f"`path` holds a file that is not a UTF-8 CSV file, so `append=True` cannot "
                f"continue it ({err}). {v.received('path', self.path)}"
            ) from None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Truncates the file, or reads the columns of the file to continue."""
        self.keys = None
        self._warned = False
        self.last_epoch = -1
        with self._writing():
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
            if not self.append or not os.path.exists(self.path):
                with open(self.path, "w", newline="", encoding="utf-8"):
                    pass
                return
        with self._writing():
            _drop_partial_line(self.path)  # a row a crash (or a full disk) cut short
        header = self._read_header()
        if header:
            self.keys = header[1:] if header[0] == "epoch" else header

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """OS errors while writing become a :class:`gradfit.WriteError` naming ``path``."""
        try:
            yield
        except OSError as err:
            raise errors.write_error(
                "CSVLogger", "path", self.path, err, "The rows written before are kept."
            ) from err

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
        with self._writing(), open(self.path, "a", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, delimiter=self.separator, lineterminator="\n")
            if write_header:
                writer.writerow(["epoch", *self.keys])
            writer.writerow([epoch, *(logs.get(key, "") for key in self.keys)])
        self.last_epoch = epoch

    def get_state(self) -> dict[str, Any]:
        """What a backup saves: ``{"last_epoch": int}``, the last epoch whose row is written."""
        return {"last_epoch": int(self.last_epoch)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`get_state`'s state: rows of later epochs are dropped from the file.

        A run that died after writing an epoch's row but before its backup
        was saved resumes at that epoch, which writes its row again: the
        file keeps one row per epoch. Call it after ``on_train_begin``.

        Args:
            state: ``{"last_epoch": int}``.
        """
        if not isinstance(state, Mapping) or set(state) != {"last_epoch"}:
            raise ValueError(
                f"`state` must be a dict with the key 'last_epoch'. {v.received('state', state)}"
            )
        last = state["last_epoch"]
        if isinstance(last, bool) or not isinstance(last, int):
            raise TypeError(
                f"`state['last_epoch']` must be an int. {v.received('state[last_epoch]', last)}"
            )
        self.last_epoch = last
        if self.append and os.path.exists(self.path):
            with self._writing():
                self._drop_rows_after(last)

    def _drop_rows_after(self, last: int) -> None:
        with open(self.path, newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file, delimiter=self.separator))
        kept = [row for row in rows if not (row and _epoch_of(row) > last)]
        if len(kept) == len(rows):
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        staging = os.path.join(directory, f".gradfit-tmp-{os.getpid()}.csv")  # (a short name)
        try:
            with open(staging, "w", newline="", encoding="utf-8") as file:
                csv.writer(file, delimiter=self.separator, lineterminator="\n").writerows(kept)
            os.replace(staging, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(staging)


def _drop_partial_line(path: str) -> None:
    """Truncates ``path`` after its last line break, if its last line has none."""
    with open(path, "rb+") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return
        file.seek(max(0, size - 65536))
        tail = file.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and size > len(tail):
            return  # a last line over 64 KiB: not a row cut short
        file.truncate(size - len(tail) + cut + 1)


def _epoch_of(row: list[str]) -> int:
    """A data row's epoch (-1 for the header or a row that does not start with one)."""
    try:
        return int(row[0])
    except ValueError:
        return -1
