"""The CDN in front of the service: purges sent over HTTP (ports.ICachePurger)."""
