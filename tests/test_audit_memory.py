"""The audit's memory tools measure and release real memory (Linux, glibc)."""
import subprocess
import sys
import textwrap


def test_resident_memory_follows_a_large_array_and_freed_heap_goes_back():
    # A fresh interpreter, so earlier tests' heap does not blur the figures.
    code = textwrap.dedent("""
        import threading
        import numpy as np
        from imagesieve_server.audit.memory import current_rss_mb, peak_rss_mb, trim_free_heap
        base = current_rss_mb()
        a = np.ones((64, 2**20), dtype=np.uint8)            # 64 MiB, touched
        held = current_rss_mb()
        del a
        freed = current_rss_mb()
        # 160 MB of small blocks from 4 threads (each its own malloc arena),
        # 2% of them kept: the free space is holes that glibc keeps resident.
        kept = []
        together = threading.Barrier(4)     # all four hold their blocks at once, each in its arena
        def churn():
            blocks = [bytearray(4000) for _ in range(10000)]
            together.wait()
            kept.append(blocks[::50])
        ts = [threading.Thread(target=churn) for _ in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        before_trim = current_rss_mb()
        print(base, held, freed, peak_rss_mb(), before_trim, trim_free_heap(), current_rss_mb())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    base, held, freed, peak, before_trim, trimmed, after_trim = out.split()
    base, held, freed, peak, before_trim, after_trim = map(float, (base, held, freed, peak, before_trim, after_trim))
    assert 60 <= held - base <= 70                      # the array's 64 MiB, seen as resident
    assert held - freed >= 60                           # a large block is unmapped when freed
    assert peak >= held
    # The holes went back: most of what the churn left resident (its 2% kept
    # is ~3 MB). Measured: 72 of 75 MB on a loaded CI host, 100+ here; an
    # absolute bound of 100 MB failed there.
    assert before_trim - freed >= 50                    # the churn left heap resident...
    assert trimmed == "True" and before_trim - after_trim >= 0.6 * (before_trim - freed)   # ...and most went back


def test_a_stage_peak_is_its_own_and_the_lifetime_peak_survives():
    code = textwrap.dedent("""
        import time
        import numpy as np
        from imagesieve_server.audit.memory import PeakRssSince, current_rss_mb, peak_rss_mb
        a = np.ones((200, 2**20), dtype=np.uint8)            # 200 MiB, in the main thread only
        del a
        stage = PeakRssSince()
        b = np.ones((16, 2**20), dtype=np.uint8)
        time.sleep(0.2)                                      # held long enough to be sampled
        del b
        print(current_rss_mb(), stage.stop(), peak_rss_mb())
    """)
    probe = ("import resource, subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", probe, code], capture_output=True, text=True, check=True).stdout
    now, stage_peak, lifetime, seen_by_parent = map(float, out.split())
    assert 14 <= stage_peak - now <= 40              # the 16 MiB array, not the 200 MiB one
    assert lifetime >= now + 190                     # the process' own peak still counts the 200 MiB
    assert seen_by_parent >= now + 190               # and so does what its parent reads at exit


_ARENAS = textwrap.dedent("""
    import ctypes, ctypes.util, sys, threading, re, tempfile
    from imagesieve_server.audit.memory import limit_malloc_arenas
    if sys.argv[1] != "0":
        assert limit_malloc_arenas(int(sys.argv[1]))
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.fopen.restype = ctypes.c_void_p
    go = threading.Barrier(8)
    def work():
        go.wait()                         # all at once: contention is what makes new arenas
        blocks = [libc.malloc(4096) for _ in range(2000)]
        go.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    path = tempfile.mktemp()
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(fp))
    libc.fclose(ctypes.c_void_p(fp))
    print(len(re.findall('<heap nr=', open(path).read())))
""")


def test_the_server_can_cap_its_malloc_arenas():
    import pytest
    from imagesieve_server.audit.memory import limit_malloc_arenas
    with pytest.raises(ValueError):
        limit_malloc_arenas(0)
    heaps = {n: int(subprocess.run([sys.executable, "-c", _ARENAS, str(n)], capture_output=True, text=True,
                                   check=True).stdout) for n in (0, 1)}
    assert heaps[1] == 1 and heaps[0] > 1, heaps
