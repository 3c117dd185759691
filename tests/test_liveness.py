"""Naming the lost rank of a failed collective from the counters on the store (an in-memory store)."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from nft_core.distributed import liveness


@pytest.fixture
def store(monkeypatch):
    found = dist.HashStore()
    monkeypatch.setattr(liveness, "_store", lambda: found)
    monkeypatch.setattr(liveness, "BEAT_SECONDS", 0.02)
    return found


def test_a_rank_behind_in_collectives_never_reached_it(store):
    liveness.post_entered(0, 7)
    liveness.post_entered(1, 6)
    beats = [liveness.Heartbeat(rank).start() for rank in (0, 1)]
    try:
        assert liveness.lost_ranks(0, 7, 2) == {1: "never reached collective #7"}
    finally:
        for beat in beats:
            beat.stop()


def test_a_rank_in_the_collective_whose_heartbeat_stands_still_stopped_answering(store):
    liveness.post_entered(0, 7)
    liveness.post_entered(1, 7)
    store.set("nft/beat/1", "3")  # beat once, then nothing (SIGSTOP, or a dead process)
    beat = liveness.Heartbeat(0).start()
    try:
        assert liveness.lost_ranks(0, 7, 2) == {1: "stopped answering (no heartbeat)"}
    finally:
        beat.stop()


def test_every_rank_there_and_beating_names_nobody(store):
    for rank in (0, 1, 2):
        liveness.post_entered(rank, 4)
    beats = [liveness.Heartbeat(rank).start() for rank in (0, 1, 2)]
    try:
        assert liveness.lost_ranks(0, 4, 3) == {}
    finally:
        for beat in beats:
            beat.stop()


def test_no_store_names_nobody(monkeypatch):
    monkeypatch.setattr(liveness, "_store", lambda: None)
    assert liveness.lost_ranks(0, 1, 2) == {}


def test_the_failure_line_drops_the_source_location_and_stays_short():
    error = RuntimeError("[/src/gloo/transport/tcp/pair.cc:561] Connection closed by peer\nmore")
    assert liveness.failure_line(error) == "Connection closed by peer"
    assert len(liveness.failure_line(RuntimeError("x" * 500))) == 160
