"""Sources: take events in from the outside and hand them, in batches, to channels."""
