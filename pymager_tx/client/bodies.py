"""
Upload bodies: bytes, a file named by its path, or any readable binary
stream, sent a part at a time as the connection takes it, never read whole.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import IO, Any, Union

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import CooperativeTask, Cooperator, TaskStopped
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from pymager_tx.core.formats import KNOWN

CHUNK_BYTES = 64 * 1024

# What upload() takes: the image's bytes, the path of a file, or a stream.
Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes]]


class Body:
    """An upload body, replayable when the bytes can be sent again from the
    start (bytes, a file by path, a seekable stream): only then may a failed
    upload be retried."""

    def __init__(self, source: Source) -> None:
        self._owned: IO[bytes] | None = None
        self.data: bytes | None = None
        self.stream: IO[bytes] | None = None
        self.path: str | None = None
        self._start = 0
        if isinstance(source, bytes | bytearray | memoryview):
            self.data = bytes(source)
        elif isinstance(source, str | os.PathLike):
            self.path = os.fspath(source)
            self._owned = self.stream = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        else:
            self.stream = source
        self.replayable = self.data is not None or _seekable(self.stream)
        if self.stream is not None and self.replayable:
            self._start = self.stream.tell()

    def producer(self, cooperator: Cooperator) -> IBodyProducer:
        """What to send for one attempt, from the start of the body."""
        if self.data is not None:
            return BytesProducer(self.data)
        assert self.stream is not None
        length: int | object = UNKNOWN_LENGTH
        if self.replayable:
            self.stream.seek(self._start)
            length = self.stream.seek(0, io.SEEK_END) - self._start
            self.stream.seek(self._start)
        return StreamProducer(self.stream, length, cooperator)

    def media_type(self) -> str:
        """From the file name's extension; else the service sniffs the bytes."""
        name = self.path or getattr(self.stream, "name", None)
        if isinstance(name, str):
            extension = name.rpartition(".")[2].lower()
            for fmt in KNOWN:
                if extension in fmt.extensions:
                    return fmt.media_type
        return "application/octet-stream"

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()


def _seekable(stream: IO[bytes] | None) -> bool:
    try:
        return stream is not None and bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


@implementer(IBodyProducer)
class BytesProducer:
    """Bytes already in memory, written at once (treq would send them with
    the global reactor's cooperator, not the client's)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IBodyProducer)
class StreamProducer:
    """Reads a stream a part at a time, as the connection asks for more, and
    leaves it open (twisted.web.client.FileBodyProducer closes it, which
    would forbid a retry and surprise a caller who passed their own file)."""

    def __init__(
        self, stream: IO[bytes], length: int | object, cooperator: Cooperator, chunk: int = CHUNK_BYTES
    ) -> None:
        self._stream = stream
        self.length = length
        self._cooperator = cooperator
        self._chunk = chunk
        self._task: CooperativeTask[Any] | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._task = self._cooperator.cooperate(self._parts(consumer))
        done: Deferred[Any] = self._task.whenDone()

        def stopped(failure: Failure) -> Deferred[None]:
            failure.trap(TaskStopped)
            # Stopped by the connection: it says how the request ended.
            return Deferred()

        return done.addCallbacks(lambda _: None, stopped)

    def _parts(self, consumer: IConsumer) -> Iterator[None]:
        while True:
            part = self._stream.read(self._chunk)
            if not part:
                return
            consumer.write(part)
            yield None

    def pauseProducing(self) -> None:
        if self._task is not None:
            self._task.pause()

    def resumeProducing(self) -> None:
        if self._task is not None:
            self._task.resume()

    def stopProducing(self) -> None:
        if self._task is not None:
            with contextlib.suppress(TaskStopped):
                self._task.stop()
