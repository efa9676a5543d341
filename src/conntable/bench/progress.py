"""Progress on stderr while the benchmarks run: which job, how far along, what it measured."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    def __init__(self, total: int, stream: Optional[TextIO] = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self._label = ""

    def _prefix(self) -> str:
        return f"[{self.done + 1:>3}/{self.total}] {time.perf_counter() - self.started:6.1f}s  {self._label}"

    def begin(self, label: str) -> None:
        self._label = label
        if self.tty:  # on a terminal, show what runs now; the line is completed by end()
            self.stream.write(self._prefix() + " ...")
            self.stream.flush()

    def end(self, outcome: str) -> None:
        line = f"{self._prefix()}  {outcome}"
        self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
        self.stream.flush()
        self.done += 1

    def note(self, message: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + f"note: {message}\n")
        self.stream.flush()
