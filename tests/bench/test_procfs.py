"""The bench's CPU and memory readings of process trees (``bench/procfs.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from bench.procfs import cpu_seconds, pids_named, rss_bytes, snapshot, tree

# A parent that starts a child spending 0.5 s of CPU time, reaps it, then waits to be told to
# exit: the child's CPU must count for the parent's tree although the child is gone.
PARENT = textwrap.dedent(
    """
    import subprocess, sys
    burn = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.5: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    print("reaped", flush=True)
    sys.stdin.read()
    """
)


def test_a_reaped_childs_cpu_counts_for_its_group() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        before = cpu_seconds({"group": [parent.pid]})["group"]
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "reaped"
        after = cpu_seconds({"group": [parent.pid], "other": [os.getpid()]})
        # The child's 0.5 s, less clock-tick rounding; the parent's own start-up on top.
        assert after["group"] - before >= 0.45
    finally:
        parent.communicate("")


def test_a_tree_holds_descendants_and_not_the_rest() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        stats = snapshot()
        mine = tree([os.getpid()], stats)
        assert {os.getpid(), child.pid} <= mine
        assert tree([child.pid], stats) == {child.pid}
        assert 1 not in mine
        assert tree([2**22 + 1], stats) == set()  # a pid that does not exist
    finally:
        child.communicate(b"")


def test_processes_are_found_by_name_and_measured() -> None:
    name = snapshot()[os.getpid()].comm
    assert os.getpid() in pids_named(name)
    assert pids_named("no-such-process-name") == []
    assert rss_bytes([os.getpid()]) > 1_000_000
