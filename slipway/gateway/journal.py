"""The usage journal: records appended as JSON lines before a response ends, read back in segments.

    journal.append(line)        event loop; one os.write on an O_APPEND descriptor (no fsync: the
                                page cache outlives a crash of this process)
    journal.seal()              event loop; the current segment stops taking lines
    for segment in journal.sealed():    worker thread; segments no live writer holds
        segment.lines() ... segment.done()     (or segment.abandon() to keep it for a later try)

On disk a segment is `<ns>-<pid>-<n>.jsonl` in the journal folder. The writer holds an exclusive
flock on its open segment, so several gateways can share one folder: a reader takes only segments
it can lock, which are sealed ones and those left by a crashed process. Replaying a segment twice
(crash between the sink write and the delete) is harmless because the sink is idempotent on
request_id.

`MemoryJournal` keeps the same interface in memory, bounded, for deployments without a folder.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterator, Protocol

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"


class Segment(Protocol):
    def lines(self) -> list[bytes]: ...

    def done(self) -> None: ...

    def abandon(self) -> None: ...


class DiskJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._fd = -1
        self._path: Path | None = None
        self._written = 0
        self._names = itertools.count()

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._start_segment()

    def append(self, line: bytes) -> None:
        if self._fd < 0:
            raise RuntimeError("the usage journal is not open; start the gateway first")
        os.write(self._fd, line)
        self._written += 1

    def seal(self) -> None:
        if self._fd >= 0 and self._written:
            self._close_segment()
            self._start_segment()

    def sealed(self) -> Iterator[Segment]:
        """Segments no live process writes to, oldest first, each locked while it is yielded."""
        for path in sorted(self.directory.glob("*" + SEGMENT_SUFFIX)):
            if path == self._path:
                continue
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:  # another reader finished it
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live writer or another reader holds it
                os.close(fd)
                continue
            if not os.path.exists(path):  # deleted between our open and our lock
                os.close(fd)
                continue
            yield _DiskSegment(path, fd)

    def close(self) -> None:
        """Close the open segment, deleting it when it holds nothing."""
        if self._fd >= 0:
            empty = self._written == 0
            path = self._path
            self._close_segment()
            if empty and path is not None:
                path.unlink(missing_ok=True)

    def _start_segment(self) -> None:
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._names)}{SEGMENT_SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd, self._path, self._written = fd, path, 0

    def _close_segment(self) -> None:
        os.close(self._fd)  # releases the lock: readers may take it from now on
        self._fd, self._path, self._written = -1, None, 0


class _DiskSegment:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def lines(self) -> list[bytes]:
        with open(self._fd, "rb", closefd=False) as file:
            data = file.read()
        return [line for line in data.split(b"\n") if line.strip()]

    def done(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self._fd)

    def abandon(self) -> None:
        os.close(self._fd)


class MemoryJournal:
    """The journal interface over a bounded in-memory buffer; records are lost if the process dies."""

    def __init__(self, max_lines: int) -> None:
        self._max_lines = max_lines
        self._lock = threading.Lock()
        self._current: list[bytes] = []
        self._pending: deque[list[bytes]] = deque()
        self._count = 0
        self._dropped = 0

    def open(self) -> None:
        pass

    def append(self, line: bytes) -> None:
        if self._count >= self._max_lines:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 10_000 == 0:
                log.error("usage buffer is full (%d records; the usage sink is not keeping up); dropped %d "
                          "records so far. Set usage_journal_dir to keep them on disk", self._max_lines, self._dropped)
            return
        self._current.append(line)
        with self._lock:
            self._count += 1

    def seal(self) -> None:
        if self._current:
            with self._lock:
                self._pending.append(self._current)
            self._current = []

    def sealed(self) -> Iterator[Segment]:
        while True:
            with self._lock:
                if not self._pending:
                    return
                lines = self._pending.popleft()
            yield _MemorySegment(self, lines)

    def close(self) -> None:
        self.seal()

    def _finished(self, count: int) -> None:
        with self._lock:
            self._count -= count

    def _put_back(self, lines: list[bytes]) -> None:
        with self._lock:
            self._pending.appendleft(lines)


class _MemorySegment:
    def __init__(self, journal: MemoryJournal, lines: list[bytes]) -> None:
        self._journal = journal
        self._lines = lines

    def lines(self) -> list[bytes]:
        return self._lines

    def done(self) -> None:
        self._journal._finished(len(self._lines))

    def abandon(self) -> None:
        self._journal._put_back(self._lines)
