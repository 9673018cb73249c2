"""DataDiver Graph: the real-time GraphQL backend of DataDiver."""

__version__ = "0.1.0"
