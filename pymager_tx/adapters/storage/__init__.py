"""Blob stores: files under a directory, and bytes in memory (the fake)."""
