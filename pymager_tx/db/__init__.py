"""Metadata of originals and derived images, in any database SQLAlchemy supports."""
