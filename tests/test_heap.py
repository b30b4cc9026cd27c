"""keep_freed_memory: inside, a loop of large allocations stops faulting pages in again; on exit the
free memory goes back to the OS (Linux with glibc; elsewhere the context does nothing)."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import torch

from attnseg import heap

BLOCK = 64 * 1024 * 1024  # above glibc's largest mmap threshold (32 MiB): mapped afresh by default
PAGES = BLOCK // 4096


def faults_of_one_block() -> int:
    """Minor page faults taken to allocate, write and free one block with torch's CPU allocator (as a
    network's activations; numpy asks for huge pages, which would hide the faults)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(BLOCK, dtype=torch.uint8)
    block.fill_(1)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del block
    return faults


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(heap._LIBC is None, reason="glibc's mallopt (Linux with glibc) is what is tested")
def test_a_loop_of_large_blocks_stops_faulting_inside_and_the_memory_is_returned_on_exit():
    # (how many faults a block takes outside depends on what this process did before: glibc serves a
    # request from a free heap chunk when it has one, so only the inside and the exit are asserted)
    before = rss_bytes()
    with heap.keep_freed_memory():
        warm_up = [faults_of_one_block() for _ in range(16)]  # the heap grows until freed blocks fit
        inside = [faults_of_one_block() for _ in range(4)]
        kept = rss_bytes() - before
    returned = kept - (rss_bytes() - before)
    assert sum(inside) < PAGES // 10, f"{inside} (warm-up {warm_up}): freed blocks should be reused"
    assert kept >= BLOCK, f"{kept} bytes kept inside: the freed blocks should stay in the process"
    assert returned >= kept - BLOCK // 2, f"{returned} of {kept} bytes returned to the OS on exit"


def test_nested_uses_restore_once_and_an_exception_restores():
    with heap.keep_freed_memory():
        with heap.keep_freed_memory():
            assert heap._depth == 2
        assert heap._depth == 1
    assert heap._depth == 0
    with pytest.raises(RuntimeError):
        with heap.keep_freed_memory():
            raise RuntimeError("boom")
    assert heap._depth == 0
