"""Fixtures shared by several test modules."""
import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch intra-op thread. Models of a few dozen atoms work on tensors of a few thousand
    elements, for which more threads cost more than they save; on a machine whose cores are busy (2 cores, a
    training run and other tests) two threads made the ML force ~10x slower per call (300-400 ms instead of 35-40
    ms for alanine dipeptide's SO3LR), because each parallel region waits for a descheduled thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
