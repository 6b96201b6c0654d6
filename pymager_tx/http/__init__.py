"""
The HTTP edge: Klein routes, the Site and its channel (bounded bodies,
deadlines, connections), uploads, conditional requests, write guards,
problem answers and streamed bodies.  It knows HTTP and the service's
interface, nothing of SQL or files.
"""
