"""One default thread count for every threaded stage, and one rule for a caller's own."""
from __future__ import annotations

import os

import numpy as np
import psutil
import pytest

from gguf_tools.errors import InputError
from gguf_tools.system import MAX_THREADS, check_threads, default_threads


def test_default_threads_are_the_physical_cores_this_process_may_use():
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    physical = psutil.cpu_count(logical=False) or allowed
    assert default_threads() == max(1, min(allowed, physical, MAX_THREADS))


def test_no_thread_count_means_the_default_and_integers_pass_through():
    assert check_threads(None) == default_threads()
    assert check_threads(3) == 3
    assert check_threads(np.int64(2)) == 2 and type(check_threads(np.int64(2))) is int


@pytest.mark.parametrize("bad", [0, -1, MAX_THREADS + 1, 2.0, "4", True])
def test_a_bad_thread_count_is_an_input_error_naming_it(bad):
    with pytest.raises(InputError, match="threads must be"):
        check_threads(bad)


def test_every_threaded_stage_uses_the_one_default():
    import gguf_runtime
    from gguf_tools.doctor import diagnose

    assert gguf_runtime.default_threads is default_threads
    assert diagnose()["threads_default"] == default_threads()
