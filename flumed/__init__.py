"""flumed: Apache Flume, rebuilt as one asyncio daemon."""

__version__ = "0.1.0"
