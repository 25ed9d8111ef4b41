"""elasticsearch sink throughput: seq -> memory -> elasticsearch (batch 1000) against the
`_bulk` test double (tests/support/http_servers.py) in its own process.

`python -m tests.bench es`. The double answers every item `created` without parsing
the documents, so the figure is the sink's cost: Flume's LogStash documents, index names,
NDJSON, one `_bulk` request per take, reading the per-item answer.
"""

from __future__ import annotations

from tests.bench.bench_http_sink import measure


def main() -> None:
    # `{"index":{"_index":"flume-2026-01-01"}}` + `{"@message":"123456","@fields":{}}`
    measure(
        "seq -> memory -> elasticsearch (LogStash serializer, batch 1000, _bulk double in "
        "its own process)",
        {"type": "elasticsearch", "indexType": ""},
        "bulk",
        80,
    )


if __name__ == "__main__":
    main()
