"""The error hierarchy. Runners decide between retry and backoff on `retriable` alone."""

from __future__ import annotations


class FlumedError(Exception):
    """Base of every flumed error."""

    retriable: bool = False


class ConfigError(FlumedError):
    """A configuration is invalid. Carries every problem found, one per line."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ChannelError(FlumedError):
    """A channel operation failed (disk error, transaction misuse, oversized batch)."""

    retriable = True


class ChannelFullError(ChannelError):
    """A put did not fit in the channel within keep-alive seconds.

    `accepted` counts the events of the batch that were committed before the failure,
    so that a source reading a stream can resume right after them.
    """

    def __init__(self, message: str, accepted: int = 0) -> None:
        super().__init__(message)
        self.accepted = accepted


class DeliveryError(FlumedError):
    """A sink could not hand its batch to the next hop; the take is rolled back."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


class ComponentStartError(FlumedError):
    """A component failed to start; the message names the component and the cause."""
