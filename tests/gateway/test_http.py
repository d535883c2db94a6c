"""Header parsing and request ids."""

from __future__ import annotations

import os

from slipway.gateway.http import RequestHeaders, new_request_id


def test_key_from_bearer_or_api_key_header():
    assert RequestHeaders([(b"authorization", b"Bearer sk-slw-x")]).secret() == b"sk-slw-x"
    assert RequestHeaders([(b"authorization", b"bearer   sk-slw-x ")]).secret() == b"sk-slw-x"
    assert RequestHeaders([(b"api-key", b"sk-slw-y")]).secret() == b"sk-slw-y"
    assert RequestHeaders([(b"authorization", b"Basic abc"), (b"api-key", b"sk-slw-y")]).secret() == b"sk-slw-y"
    assert RequestHeaders([(b"authorization", b"Bearer ")]).secret() is None
    assert RequestHeaders([]).secret() is None


def test_only_plain_short_client_request_ids_are_kept():
    assert RequestHeaders([(b"x-request-id", b"abc-123_x.y:z")]).client_request_id() == b"abc-123_x.y:z"
    assert RequestHeaders([(b"x-request-id", b"a" * 65)]).client_request_id() is None
    assert RequestHeaders([(b"x-request-id", b"a b")]).client_request_id() is None
    assert RequestHeaders([(b"x-request-id", b"")]).client_request_id() is None


def test_request_ids_are_unique_and_differ_in_a_forked_child():
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's first id must not repeat the parent's sequence
        os.write(write, new_request_id())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = os.read(read, 100)
    os.close(read)
    os.close(write)
    assert child_id[:20] != new_request_id()[:20]
