"""flumed.workers without processes: metrics sums and each worker's share of a graph."""

from __future__ import annotations

from flumed.config.graph import build_agent
from flumed.workers import for_worker, sum_metrics

DOC = {
    "agents": {
        "a1": {
            "workers": 3,
            "sources": {
                "t": {"type": "exec", "command": "true", "channels": ["c"]},
                "n": {"type": "netcat", "bind": "127.0.0.1", "port": 0, "channels": ["c"]},
            },
            "channels": {"c": {"type": "file", "dataDirs": "/d1, /d2/"}},
            "sinks": {
                "k": {
                    "type": "file_roll",
                    "channel": "c",
                    "sink.directory": "/out",
                    "sink.pathManager.prefix": "p-",
                },
            },
        }
    }
}


def test_each_worker_gets_its_share_and_its_own_state() -> None:
    spec = build_agent(DOC, "a1", "t.toml")
    assert spec.workers == 3
    w0, w2 = for_worker(spec, 0), for_worker(spec, 2)
    assert set(w0.sources) == {"t", "n"} and set(w2.sources) == {"n"}
    assert w0.channels["c"].config.dataDirs == "/d1, /d2/"
    assert w2.channels["c"].config.dataDirs == "/d1-worker2,/d2-worker2"
    assert w0.sinks["k"].config.filePrefix == "p-"
    assert w2.sinks["k"].config.filePrefix == "worker2-p-"


def test_metrics_are_summed_per_component() -> None:
    a = {
        "SOURCE.r": {
            "EventAcceptedCount": "5",
            "StartTime": "200",
            "StopTime": "0",
            "Type": "SOURCE",
        },
        "CHANNEL.c": {
            "ChannelSize": "10",
            "ChannelCapacity": "100",
            "ChannelFillPercentage": "10.0",
        },
    }
    b = {
        "SOURCE.r": {
            "EventAcceptedCount": "7",
            "StartTime": "100",
            "StopTime": "0",
            "Type": "SOURCE",
        },
        "CHANNEL.c": {
            "ChannelSize": "30",
            "ChannelCapacity": "100",
            "ChannelFillPercentage": "30.0",
        },
        "SINK.only1": {"EventDrainSuccessCount": "3"},
    }
    s = sum_metrics([a, b])
    assert s["SOURCE.r"] == {
        "EventAcceptedCount": "12", "StartTime": "100", "StopTime": "0", "Type": "SOURCE",
    }  # fmt: skip
    assert s["CHANNEL.c"]["ChannelSize"] == "40" and s["CHANNEL.c"]["ChannelCapacity"] == "200"
    assert float(s["CHANNEL.c"]["ChannelFillPercentage"]) == 20.0
    assert s["SINK.only1"] == {"EventDrainSuccessCount": "3"}
