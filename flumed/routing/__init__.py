"""Routing: the channel processor and channel selectors."""
