import time

from spark_code.progress import Progress


def test_a_line_says_done_of_total_the_rate_and_the_time_left():
    progress = Progress("photos embedded", 1_000, lambda: 0, lambda line: None)
    assert progress.line(250, 10.0) == "photos embedded: 250 of 1,000 (25%) in 10 s, 25.0/s, about 30 s left"
    assert progress.line(1_000, 40.0) == "photos embedded: 1,000 of 1,000 (100%) in 40 s, 25.0/s"
    assert progress.line(0, 5.0) == "photos embedded: 0 of 1,000 (0%) in 5 s, 0.0/s"


def test_lines_come_while_the_work_runs_and_once_at_its_end():
    lines: list[str] = []
    done = iter(range(1000))
    with Progress("rows", 100, lambda: next(done), lines.append, every=0.05):
        time.sleep(0.3)
    assert len(lines) >= 3 and lines[-1].startswith("rows: ")
    counts = [int(line.split(": ", 1)[1].split(" of ")[0]) for line in lines]
    assert counts == sorted(counts)  # read afresh each time, never driven by the reporter
