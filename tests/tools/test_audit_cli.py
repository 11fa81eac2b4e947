"""`vpp audit verify` on a real command log: intact, then one byte flipped."""

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from model.command import Command, CommandState
from twin.command_store import CommandStore
from twin.commands import CommandBook

ROOT = Path(__file__).resolve().parents[2]


def _vpp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip


def test_verify_intact_then_names_flipped_record(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    engine = create_engine(url)
    store = CommandStore(engine).open()
    book = CommandBook()
    store.attach(book)
    for i in range(4):
        book.accept(Command("VPP1.BAT01/DRCC1.WSpt.setMag.f", float(i), "rest", id=f"c{i}"))
        book.transition(f"c{i}", CommandState.SENT, "written")
    store.flush()
    out = _vpp("audit", "verify", "--history-url", url)
    assert out.returncode == 0 and "8 record(s), hash chain intact" in out.stdout
    with engine.begin() as c:  # flip one byte of record 6 (c2 sent): "written" -> "wrjtten"
        c.execute(text("UPDATE command_log SET reason = 'wrjtten' WHERE seq = 6"))
    engine.dispose()
    out = _vpp("audit", "verify", "--history-url", url)
    assert out.returncode == 1 and "record 6 does not match" in out.stdout
    out = _vpp("audit", "verify", "--history-url", f"sqlite:///{tmp_path}/empty.db")
    assert out.returncode == 2 and "no command log" in out.stderr
