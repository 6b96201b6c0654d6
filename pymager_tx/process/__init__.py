"""
The process: twistd's options, the MultiService that starts and stops the
pools, database, recovery and the port in order, worker processes and the
hand-off of connections, thread pools, and the deployment checks.
"""
