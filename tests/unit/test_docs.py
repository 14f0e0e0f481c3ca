from __future__ import annotations

from pathlib import Path

from docs.loop import BOXES, draw
from flows import FLOWS


def test_the_loop_picture_is_drawn_from_registered_flows(tmp_path: Path) -> None:
    assert set(BOXES) - {"serving", "automations"} <= set(FLOWS)
    assert draw(tmp_path / "loop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
