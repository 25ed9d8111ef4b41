"""Sinks: drain a channel to the next hop, committing only what the next hop holds."""
