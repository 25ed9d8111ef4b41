"""Interceptors: per-batch transformations and filters run by the channel processor."""
