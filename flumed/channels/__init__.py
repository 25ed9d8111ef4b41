"""Channels: where events wait, inside transactions, between sources and sinks."""
