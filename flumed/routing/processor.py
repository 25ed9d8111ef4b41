"""The channel processor: interceptors, then the selector, then one transaction per channel."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flumed.channels.base import Channel
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event
from flumed.interceptors.base import Interceptor
from flumed.routing.selectors import ChannelSelector
from flumed.tap import HUB

log = logging.getLogger("flumed.routing")


class ChannelProcessor:
    """Puts a source's batches into its channels (Flume's ChannelProcessor).

    Called by one source; calls may overlap (one per connection), each call uses its
    own transactions. A batch larger than a channel's transactionCapacity is put in
    consecutive transactions of that size.
    """

    def __init__(self, selector: ChannelSelector, interceptors: Sequence[Interceptor] = ()) -> None:
        self.selector = selector
        self.interceptors = list(interceptors)
        self.optional_failures = 0

    @property
    def channels(self) -> list[Channel]:
        return self.selector.channels

    async def process_batch(self, events: list[Event]) -> None:
        """Run interceptors and commit `events` to every required channel.

        Raises:
            ChannelFullError: a required channel had no room within keep-alive.
                `accepted` tells how many leading events of `events` were committed
                everywhere, when that is known (no interceptor, one required channel).
            ChannelError: any other failure of a required channel.
        """
        simple = not self.interceptors
        for i in self.interceptors:
            events = i.intercept(events)
            if not events:
                return
        routes = self.selector.route(events)
        simple = simple and len(routes) == 1 and len(routes[0][0][0]) == 1
        for (required, optional), batch in routes:
            for ch in required:
                done = await _put(ch, batch)
                if done < len(batch):
                    raise ChannelFullError(
                        f"Channel {ch.name} is full: {len(batch) - done} events not accepted.",
                        accepted=done if simple else 0,
                    )
            for ch in optional:
                try:
                    done = await _put(ch, batch)
                except ChannelError as e:
                    done = -1
                    log.warning("Optional channel %s refused a batch: %s", ch.name, e)
                if done != len(batch):
                    self.optional_failures += 1


async def _put(ch: Channel, batch: list[Event]) -> int:
    """Commit `batch` to `ch` in transactions of at most transactionCapacity.

    Returns how many were committed when a ChannelFullError stopped it; other
    ChannelErrors propagate.
    """
    step = ch.transaction_capacity
    done = 0
    while done < len(batch):
        chunk = batch if (done == 0 and len(batch) <= step) else batch[done : done + step]
        try:
            async with ch.transaction() as tx:
                await tx.put_batch(chunk)
        except ChannelFullError:
            return done
        HUB.offer(ch.name, chunk)
        done += len(chunk)
    return done
