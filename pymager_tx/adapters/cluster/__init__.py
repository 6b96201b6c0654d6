"""
Coordination of the processes that share one data directory: liveness from
flock(2) on a file per process, and a removal epoch in a shared memory map.
"""
