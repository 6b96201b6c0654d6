"""Metrics for Prometheus (the port: pymager_tx.ports.Metrics)."""
