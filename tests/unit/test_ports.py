"""Each port's adapters and fakes provide its whole interface."""

from __future__ import annotations

from pathlib import Path

from zope.interface.verify import verifyObject

from pymager_tx.adapters.cluster.epoch import SharedEpoch
from pymager_tx.app.peers import Peers
from pymager_tx.ports import IEpoch, IPeers, LocalEpoch


def test_peers_alone_is_peer_liveness() -> None:
    alone = Peers.alone()
    assert verifyObject(IPeers, alone)
    assert alone.timer is None


def test_both_epochs_are_removal_signals(tmp_path: Path) -> None:
    shared = SharedEpoch.of(tmp_path)
    shared.open()
    try:
        for epoch in (LocalEpoch(), shared):
            assert verifyObject(IEpoch, epoch)
            before = epoch.read()
            epoch.bump()
            assert epoch.read() != before
    finally:
        shared.close()
