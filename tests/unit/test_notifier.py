"""fs.vfs.Notifier: attribute invalidations are never stuck behind a page invalidation that
blocks in the kernel (a read or write in flight holds the pages), a flush stops waiting for
page invalidations when a data request begins, and otherwise waits for what it says."""

from __future__ import annotations

import threading

import pytest
import trio

from fs import vfs


class FakeSession:
    """A fake kernel: page invalidations of inode 7 block until `release` is set."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.release = threading.Event()

    def notify_inval_inode(self, ino: int, attr_only: bool) -> None:
        if ino == 7 and not attr_only:
            self.release.wait(10)
        self.sent.append(("inode", ino, attr_only))

    def notify_inval_entry(self, parent: int, name: bytes) -> None:
        self.sent.append(("entry", parent, name))

    def notify_delete(self, parent: int, child: int, name: bytes) -> None:
        self.sent.append(("delete", parent, child, name))


@pytest.fixture
def session():
    return FakeSession()


@pytest.fixture
def kernel(session):
    return session.sent, session.release


@pytest.fixture
def notifier(session):
    n = vfs.Notifier()
    n.start(session)
    yield n
    n.stop()


def test_flush_waits_for_attrs_pages_and_entries(kernel, notifier) -> None:
    sent, release = kernel
    release.set()

    async def main() -> None:
        notifier.queue_invalidate_inode(7)
        notifier.queue_invalidate_entry(1, b"name")
        assert await notifier.flush(5.0) == "done"
        assert ("inode", 7, True) in sent
        # the two threads interleave; the page thread's own order is kept
        assert [x for x in sent if x[-1] is not True] == [("inode", 7, False),
                                                          ("entry", 1, b"name")]

    trio.run(main)


def test_blocked_pages_time_out_but_attrs_get_out(kernel, notifier) -> None:
    sent, release = kernel

    async def main() -> None:
        notifier.queue_invalidate_inode(7)
        notifier.queue_invalidate_inode(8)
        assert await notifier.flush(0.2) == "timeout"
        # the attribute thread was not held up by the page thread stuck on inode 7
        assert ("inode", 7, True) in sent and ("inode", 8, True) in sent
        assert ("inode", 8, False) not in sent
        release.set()
        assert await notifier.flush(5.0) == "done"
        assert sent[-2:] == [("inode", 7, False), ("inode", 8, False)]

    trio.run(main)


def test_a_data_request_in_flight_defers_pages(kernel, notifier) -> None:
    sent, release = kernel

    async def main() -> None:
        with notifier.data_request():
            notifier.queue_invalidate_inode(7)
            assert await notifier.flush(5.0) == "pages deferred"
            assert ("inode", 7, True) in sent

    trio.run(main)
    release.set()


def test_a_data_request_beginning_ends_the_page_wait(kernel, notifier) -> None:
    """The kernel locks the pages before it sends the request: a write that arrives while the
    flush waits is what blocks the page invalidation, so the flush must stop waiting."""
    sent, release = kernel

    async def main() -> None:
        notifier.queue_invalidate_inode(7)
        result = []

        async def flush() -> None:
            result.append(await notifier.flush(5.0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush)
            with trio.fail_after(5):  # until the flush waits on the stuck page thread
                while not notifier._page_waits:
                    await trio.sleep(0.01)
            assert not result
            with notifier.data_request():
                await trio.sleep(0)
        assert result == ["pages deferred"]

    trio.run(main)
    release.set()


def test_attr_only_queues_nothing_for_pages(kernel, notifier) -> None:
    sent, _ = kernel

    async def main() -> None:
        notifier.queue_invalidate_inode(7, attr_only=True)
        assert await notifier.flush(0.5) == "done"  # inode 7's pages were never queued

    trio.run(main)
    assert sent == [("inode", 7, True)]


def test_data_requests_are_counted_until_they_end() -> None:
    n = vfs.Notifier()
    with n.data_request():
        with n.data_request():
            assert n.data_requests == 2
        assert n.data_requests == 1
    with pytest.raises(OSError), n.data_request():
        raise OSError("a failed read")
    assert n.data_requests == 0


def test_flush_before_start_does_not_wait() -> None:
    n = vfs.Notifier()
    n.queue_invalidate_inode(7)
    assert trio.run(n.flush, 0.0) == "done"
