"""Event serializers: how a file-writing sink turns a batch of events into bytes."""
