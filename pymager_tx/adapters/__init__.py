"""
Adapters: the implementations of the ports (pymager_tx.ports) and of the
metadata database.  The composition root (pymager_tx.process.server) is the
only place that picks them.
"""
