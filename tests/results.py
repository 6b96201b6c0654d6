"""Reading Deferreds that have already fired, for tests that run without threads.

Twisted's trial already knows how (and how to explain a Deferred that has not
fired); pytest-style tests borrow its assertions.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

_assertions = SynchronousTestCase()

result_of = _assertions.successResultOf
failure_of = _assertions.failureResultOf
no_result = _assertions.assertNoResult
