from __future__ import annotations

import io

from tqdm import tqdm

from attnseg.progress import LineProgress, progress


class FakeClock:
    def __init__(self, step_s: float = 0.0):
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_hand_advanced_bar_off_a_terminal_writes_only_what_its_caller_writes():
    out = io.StringIO()
    bar = LineProgress(total=100, unit="it", file=out, clock=FakeClock(0.1))
    for i in range(100):
        bar.update(1)
        bar.set_description(f"epoch {i // 25 + 1}/4")
        bar.set_postfix(loss=f"{1 / (i + 1):.4f}")
        if (i + 1) % 25 == 0:
            bar.write(f"epoch {(i + 1) // 25}/4: loss {1 / (i + 1):.4f}")
    bar.close()
    assert lines(out) == [f"epoch {k}/4: loss {1 / (25 * k):.4f}" for k in (1, 2, 3, 4)]


def test_a_slow_epoch_shows_a_heartbeat_with_the_estimate():
    out = io.StringIO()
    bar = LineProgress(total=100, file=out, heartbeat_s=120, clock=FakeClock(50.0))
    bar.set_description("epoch 1/4")
    bar.set_postfix(loss="0.5000")
    for _ in range(6):
        bar.update(1)
    written = lines(out)
    # the clock advances 50 s per reading: a line at most every 120 s
    assert 1 <= len(written) <= 3
    assert written[0].startswith("epoch 1/4: ") and "left" in written[0] and "loss=0.5000" in written[0]


def test_a_counted_loop_writes_a_line_per_tenth_and_a_last_one():
    out = io.StringIO()
    seen = list(LineProgress(range(40), desc="predict", unit="case", file=out, clock=FakeClock()))
    assert seen == list(range(40))
    written = lines(out)
    assert [w.split(",")[0] for w in written] == [f"predict: {n}/40 case" for n in range(4, 41, 4)]


def test_a_nested_bar_is_silent_off_a_terminal():
    out = io.StringIO()
    assert list(progress(range(30), desc="windows", file=out, nested=True)) == list(range(30))
    assert out.getvalue() == ""


def test_on_a_terminal_it_is_a_tqdm_bar():
    bar = progress(range(3), desc="predict", file=Terminal())
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2]
    assert isinstance(progress(range(3), file=io.StringIO()), LineProgress)
