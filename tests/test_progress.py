"""The progress line: a terminal gets one rewritten line, a log gets plain
lines (no carriage returns), and no ETA is guessed from the first images."""
import io

from imagesieve.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_plain_lines_and_a_terminal_one_rewritten_line():
    log = io.StringIO()
    with Progress(1000, "embedding", every_s=0.0, stream=log) as p:
        for _ in range(500):
            p.update()
    assert "\r" not in log.getvalue()
    assert log.getvalue().count("\n") == 1                # the final line only: logs get one every 10 s
    assert log.getvalue().startswith("embedding 500/1000")
    assert "ETA" not in log.getvalue()                    # too early to guess

    term = _Terminal()             # a terminal gets tqdm's bar, rewritten in place
    with Progress(1000, "embedding", every_s=0.0, stream=term) as p:
        for _ in range(3):
            p.update(ok=False)
    out = term.getvalue()
    last = out.rstrip("\n").split("\r")[-1]
    assert out.count("\r") >= 3 and out.count("\n") == 1
    assert last.startswith("embedding:") and "3/1000" in last and "3 failed" in last and "img/s" in last


def test_a_stage_done_in_an_instant_shows_its_time_not_a_rate():
    """An audit's neighbour search of 533 images finished in a millisecond
    and its log line read "533/533 (915913.0 steps/s)"; under a second the
    line gives the time taken instead."""
    log = io.StringIO()
    with Progress(533, "nearest neighbours", unit="steps", stream=log) as p:
        p.update(533)
    assert log.getvalue().strip() == "nearest neighbours 533/533 (0.0 s)"
