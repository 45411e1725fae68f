"""`skip_init` (models/model.py): modules built for a checkpoint skip torch's random initialisation, and nothing
else in the process does, whatever the threads."""

from __future__ import annotations

import threading

import torch
from torch import nn

from coulisse.models.skip_init import INIT_FUNCTIONS, skip_init


def filled(value: float) -> torch.Tensor:
    return torch.full((64,), value, device="cpu")  # not on the meta device of a build


def test_two_builds_overlapping_on_two_threads_leave_nn_init_as_it_was():
    """A enters, B enters, A leaves, B leaves: B had saved A's stand-ins as "the originals" and put them back,
    so nn.init stayed a no-op for the process (audit 46: 3 of 20 rounds of four concurrent loads)."""
    originals = {n: getattr(nn.init, n) for n in INIT_FUNCTIONS}
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with skip_init():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with skip_init():
            b_in.set()
            a_out.wait(10)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert {n: getattr(nn.init, n) for n in INIT_FUNCTIONS} == originals
    assert not torch.equal(nn.init.normal_(filled(7.0)), filled(7.0))


def test_a_module_built_on_another_thread_during_a_build_is_initialised():
    inside, built = threading.Event(), threading.Event()
    seen = {}

    def user():
        inside.wait(10)
        seen["weight"] = nn.Linear(8, 8).weight.detach().clone()
        seen["normal"] = nn.init.normal_(filled(7.0))
        built.set()

    thread = threading.Thread(target=user)
    thread.start()
    with skip_init():
        skipped = nn.Linear(8, 8)
        inside.set()
        built.wait(20)
        assert torch.equal(nn.init.normal_(filled(7.0)), filled(7.0))  # this thread skips
    thread.join(20)
    assert skipped.weight.is_meta
    assert not torch.equal(seen["normal"], filled(7.0)) and seen["weight"].abs().sum() > 0
