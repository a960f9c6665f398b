"""Participant-data collector: stores browser-study uploads in an S3-compatible bucket or a local folder."""

__version__ = "0.1.0"
