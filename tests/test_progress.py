"""The progress display: a bar redrawn in place on a terminal, plain lines into a log."""

import io

from rnnlab import progress
from rnnlab.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_into_a_log_the_last_step_is_a_plain_line(monkeypatch):
    clock = iter([100.0, 101.0, 102.0, 104.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock, 104.0))
    stream = io.StringIO()
    bar = Progress(3, 0, stream)
    bar.update(0, 2.0, 10)  # shown: the first call is always more than 10 s after nothing
    bar.update(1, 1.5, 10)  # not shown: 1 s later
    bar.update(2, 1.25, 10, "lr 0.1")  # the last step is always shown
    bar.message("eval loss 1.0")
    bar.close()
    assert stream.getvalue() == (
        "step 1/3 loss 2.0000 10 items/s elapsed 0:01 ETA 0:02 \n"
        "step 3/3 loss 1.2500 8 items/s elapsed 0:04 ETA 0:00 lr 0.1\n"
        "eval loss 1.0\n"
    )


def test_on_a_terminal_one_line_is_redrawn():
    stream = Terminal()
    bar = Progress(4, 2, stream)  # resumed at step 2
    bar.update(3, 0.5, 64)
    bar.message("done")
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r[" + "#" * 24 + "] 4/4 loss 0.5000 ")
    drawn = len(text.split("\r")[1])  # the bar, blanked before the message
    assert "\r" + " " * drawn + "\rdone\n" in text and text.endswith("\n")
    assert text.count("\n") == 1  # (the message's line: no empty line after it)


def test_quiet_shows_messages_only():
    for stream in (io.StringIO(), Terminal()):
        bar = Progress(2, 0, stream, quiet=True)
        bar.update(0, 1.0, 1)
        bar.update(1, 1.0, 1)
        bar.message("best")
        bar.close()
        assert stream.getvalue() == "best\n"


def test_a_reader_gone_away_silences_the_display_and_says_so(tmp_path):
    """A pipe whose reader has gone (`rnnlab train ... 2>&1 | head -2`): the write's
    BrokenPipeError is not raised into the training loop (which lost every step since its
    last checkpoint to it), `gone` tells the loop to stop, and the stream's descriptor then
    writes to os.devnull: what its buffer held and what comes later (Python's flush of
    stderr at exit) raise nothing."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "w")
    bar = Progress(5, 0, stream)
    bar.message("valid loss 1.0")
    assert bar.gone
    bar.update(4, 1.0, 10)
    bar.message("more")
    bar.close()
    stream.write("after\n")
    stream.flush()  # (devnull now: raised BrokenPipeError before)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        assert os.path.sameopenfile(stream.fileno(), null)
    finally:
        os.close(null)
        stream.close()


def test_a_stream_without_a_descriptor_is_left_as_it_is():
    class Broken(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    bar = Progress(2, 0, Broken())
    bar.message("x")
    assert bar.gone
    bar.update(1, 1.0, 1)  # nothing written, nothing raised
