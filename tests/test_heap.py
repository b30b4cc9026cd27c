"""keep_freed_memory: freed blocks are reused without new page faults inside, and glibc's behaviour
comes back outside (Linux with glibc; elsewhere the context does nothing)."""

from __future__ import annotations

import resource

import pytest
import torch

from attnseg import heap

BLOCK = 64 * 1024 * 1024  # above glibc's largest mmap threshold (32 MiB): always mmap'd by default
PAGES = BLOCK // 4096


def faults_of_second_block() -> int:
    """Minor page faults taken by writing a fresh block after an equal one was written and freed."""
    # torch's CPU allocator, as the network's activations (numpy asks for huge pages, which hides faults)
    first = torch.ones(BLOCK, dtype=torch.uint8)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = torch.ones(BLOCK, dtype=torch.uint8)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del second
    return faults


glibc = pytest.mark.skipif(heap._LIBC is None, reason="glibc's mallopt is needed (Linux with glibc)")


@glibc
def test_a_freed_block_is_reused_without_page_faults_inside_only():
    outside = faults_of_second_block()
    with heap.keep_freed_memory():
        faults_of_second_block()  # the first one inside may grow the heap
        inside = faults_of_second_block()
    after = faults_of_second_block()
    assert outside > PAGES // 2, f"{outside} faults for {PAGES} pages: glibc should map a fresh block"
    assert inside < PAGES // 20, f"{inside} faults for {PAGES} pages: the freed block should be reused"
    assert after > PAGES // 2, f"{after} faults for {PAGES} pages: glibc's mmap must come back on exit"


def test_nested_uses_restore_once_and_exceptions_restore():
    with heap.keep_freed_memory():
        with heap.keep_freed_memory():
            assert heap._depth == 2
        assert heap._depth == 1
    assert heap._depth == 0
    with pytest.raises(RuntimeError):
        with heap.keep_freed_memory():
            raise RuntimeError("boom")
    assert heap._depth == 0
