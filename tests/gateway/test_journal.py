"""Journal segments on disk: sealing, locking against live writers, replay, and the memory variant."""

from __future__ import annotations

import fcntl
import os

from slipway.gateway.journal import DiskJournal, MemoryJournal


def drain(journal) -> list[bytes]:
    lines = []
    for segment in journal.sealed():
        lines += segment.lines()
        segment.done()
    return lines


def test_sealed_segments_are_read_once_and_deleted(tmp_path):
    journal = DiskJournal(tmp_path)
    journal.open()
    journal.append(b'{"n": 1}\n')
    journal.append(b'{"n": 2}\n')
    assert drain(journal) == []  # the open segment belongs to its writer
    journal.seal()
    journal.append(b'{"n": 3}\n')
    assert drain(journal) == [b'{"n": 1}', b'{"n": 2}']
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # only the open one is left
    journal.seal()
    journal.seal()  # nothing new: no empty segment is made
    assert drain(journal) == [b'{"n": 3}']
    journal.close()
    assert list(tmp_path.glob("*.jsonl")) == []


def test_another_writers_open_segment_is_left_alone_and_a_dead_writers_is_replayed(tmp_path):
    live = DiskJournal(tmp_path)
    live.open()
    live.append(b'{"live": 1}\n')
    # A crashed process left this one: written, never sealed, no lock held.
    (tmp_path / "00000000000000000001-999-0.jsonl").write_bytes(b'{"dead": 1}\n{"dead": 2}\n{"cut sh')
    reader = DiskJournal(tmp_path)
    assert drain(reader) == [b'{"dead": 1}', b'{"dead": 2}', b'{"cut sh']
    assert [p.name for p in tmp_path.glob("*.jsonl")] == [live._path.name]
    live.close()


def test_an_abandoned_segment_stays_for_the_next_try(tmp_path):
    journal = DiskJournal(tmp_path)
    journal.open()
    journal.append(b"x\n")
    journal.seal()
    (segment,) = list(journal.sealed())
    path = segment.path
    # While one reader holds it, a second reader skips it.
    assert list(DiskJournal(tmp_path).sealed()) == []
    segment.abandon()
    assert path.exists()
    assert drain(journal) == [b"x"]
    fd = os.open(journal._path, os.O_RDONLY)
    try:  # the writer's lock is held while its segment is open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise AssertionError("the open segment was not locked")
        except BlockingIOError:
            pass
    finally:
        os.close(fd)
    journal.close()


def test_memory_journal_is_bounded_and_keeps_abandoned_lines():
    journal = MemoryJournal(max_lines=3)
    for n in range(5):
        journal.append(b"%d" % n)
    journal.seal()
    (segment,) = list(journal.sealed())
    assert segment.lines() == [b"0", b"1", b"2"]
    segment.abandon()
    assert drain(journal) == [b"0", b"1", b"2"]
    journal.append(b"3")  # room again once written
    journal.seal()
    assert drain(journal) == [b"3"]
