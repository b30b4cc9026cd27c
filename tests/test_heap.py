"""keep_freed_memory: inside, a loop of large allocations stops faulting pages in again; outside,
glibc maps (and unmaps) large blocks as before (Linux with glibc; elsewhere the context does nothing)."""

from __future__ import annotations

import resource

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


@pytest.mark.skipif(heap._LIBC is None, reason="glibc's mallopt (Linux with glibc) is what is tested")
def test_a_loop_of_large_blocks_stops_faulting_inside_and_glibc_maps_them_again_outside():
    outside = [faults_of_one_block() for _ in range(3)]
    with heap.keep_freed_memory():
        warm_up = [faults_of_one_block() for _ in range(16)]  # the heap grows until freed blocks fit
        inside = [faults_of_one_block() for _ in range(4)]
    after = [faults_of_one_block() for _ in range(3)]
    assert min(outside) > PAGES // 2, f"{outside} faults for {PAGES} pages: glibc should map fresh blocks"
    assert sum(inside) < PAGES // 10, f"{inside} (warm-up {warm_up}): freed blocks should be reused"
    assert min(after) > PAGES // 2, f"{after} faults for {PAGES} pages: glibc's mmap must come back"


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
