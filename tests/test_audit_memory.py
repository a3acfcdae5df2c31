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
        def churn():
            blocks = [bytearray(4000) for _ in range(10000)]
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
    assert trimmed == "True" and before_trim - after_trim >= 100    # the holes went back


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
