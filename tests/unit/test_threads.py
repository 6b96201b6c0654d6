"""Thread pools: image threads yield the CPU to the reactor's."""

from __future__ import annotations

import os
import sys
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor

from pymager_tx.process.threads import ThreadPoolService


def _own_nice_value() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is Linux's")
@pytest_twisted.ensureDeferred
async def test_a_pools_threads_run_nicer_by_its_niceness_and_the_rest_do_not() -> None:
    before = _own_nice_value()
    nice = ThreadPoolService(reactor, "test-nice", 1, niceness=3)
    plain = ThreadPoolService(reactor, "test-plain", 1)
    nice.startService()
    plain.startService()
    try:
        assert await nice.offload(_own_nice_value) == min(19, before + 3)
        assert await plain.offload(_own_nice_value) == before
    finally:
        nice.stopService()
        plain.stopService()
    # The reactor's thread (this one) is left as it was.
    assert _own_nice_value() == before
