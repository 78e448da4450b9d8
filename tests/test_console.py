"""Progress on the console: count, rate and ETA as plain lines when the output is not a terminal."""

from __future__ import annotations

import io
import re

from olive_flows.console import Console


def test_plain_progress_lines_show_count_rate_and_eta_then_a_summary():
    out = io.StringIO()
    progress = Console(out).progress("dates training", 8, "steps")
    for step in range(8):
        progress.update(1, note=f"loss {1 / (step + 1):.4f}")
        if step == 3:
            progress.write("step    4/8  held-out loss 0.5000")
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "        dates training: 2/8 steps (25%), " + lines[0].split("(25%), ")[1]
    assert re.fullmatch(r" {8}dates training: 2/8 steps \(25%\), [\d.]+ steps/s, ETA \d+:\d\d  loss 0\.5000", lines[0])
    assert "        step    4/8  held-out loss 0.5000" in lines
    assert [line.split(":")[1].split("(")[0].strip() for line in lines if "steps (" in line] == [
        "2/8 steps",
        "4/8 steps",
        "6/8 steps",
    ]
    assert re.fullmatch(r" {8}dates training: 8/8 steps in 0:00 \([\d.]+ steps/s\)  loss 0\.1250", lines[-1])


def test_a_resumed_step_counts_only_what_it_does_itself():
    out = io.StringIO()
    progress = Console(out).progress("contacts training", 10, "steps", done=6)
    progress.update(4)
    progress.close()
    assert out.getvalue().startswith("        contacts training: 10/10 steps in 0:00 (")
