"""Process-level knobs shared by the parts that run torch."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def torch_threads(count: int):
    """Run a block with ``count`` torch intra-op threads, then restore the process setting.

    Small inferences (one sentence, a handful of tokens) lose to thread hand-offs on a small
    CPU: on a 2-core machine MiniLM encodes a sentence in 25 ms with one thread and 130-390 ms
    with two (measured). ``count <= 0`` leaves torch's setting alone.
    """
    import torch

    previous = torch.get_num_threads()
    if count <= 0 or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
