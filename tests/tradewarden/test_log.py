"""tradewarden/log.py: loggers that load structlog when a line first needs it, with the lines structlog writes.

Each test runs in a fresh interpreter: whether structlog is loaded is a fact about a whole process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(program: str) -> subprocess.CompletedProcess[str]:
    ran = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr[-2000:]
    return ran


def _without_timestamps(text: str) -> str:
    return re.sub(r'\d{4}-\d\d-\d\dT[\d:.]+Z', "<time>", text)


def test_a_line_below_the_configured_level_returns_without_loading_structlog() -> None:
    ran = _run("""
import sys
from server.logging import configure_logging
from tradewarden.log import get_logger
configure_logging("warning")
log = get_logger("tradewarden.test")
log.debug("quiet"); log.info("quiet", detail=1); log.msg("quiet")
print("structlog" in sys.modules)
""")
    assert ran.stdout.strip() == "False"
    assert ran.stderr == ""


def test_the_first_line_at_the_configured_level_loads_structlog_configured_for_the_servers_stderr() -> None:
    ran = _run("""
import io, sys
from server.logging import configure_logging
from tradewarden.log import get_logger
configure_logging("warning")
sys.stderr = io.StringIO()  # replaced after configure_logging: the line still goes to the stream it was given
get_logger("tradewarden.test").warning("loud", detail=1)
print("structlog" in sys.modules, "rich" in sys.modules, repr(sys.stderr.getvalue()))
""")
    assert ran.stdout.strip() == "True False ''"
    assert _without_timestamps(ran.stderr) == "<time> [warning  ] loud                           detail=1\n"


def test_lines_are_exactly_what_structlog_itself_writes_in_both_formats() -> None:
    for json in ("False", "True"):
        ran = _run(f"""
from server.logging import configure_logging
from tradewarden.log import get_logger
configure_logging("info", {json})
get_logger("tradewarden.test").info("starting", agent="a1", token="sk-abcdefghijklmnopqrstuvwxyz012345")
import structlog
structlog.get_logger("tradewarden.test").info("starting", agent="a1", token="sk-abcdefghijklmnopqrstuvwxyz012345")
""")
        lazy, direct = _without_timestamps(ran.stderr).splitlines()
        assert lazy == direct
        assert "starting" in lazy and "a1" in lazy and "sk-abcdefghijklmnopqrstuvwxyz012345" not in lazy


def test_configuring_after_structlog_is_loaded_applies_at_once() -> None:
    ran = _run("""
import structlog
from server.logging import configure_logging
from tradewarden.log import get_logger
configure_logging("error")
log = get_logger("tradewarden.test")
log.warning("dropped by structlog's own filter")
log.error("kept")
print(structlog.get_config()["wrapper_class"].__name__)
""")
    assert ran.stdout.strip() == "BoundLoggerFilteringAtError"
    assert "dropped" not in ran.stderr and "kept" in ran.stderr


def test_no_module_of_the_server_imports_structlog_but_the_lazy_logger() -> None:
    sources = [path for package in ("server", "tools", "policies", "ledger", "broker", "tradewarden")
               for path in (ROOT / package).rglob("*.py")]
    direct = [str(path.relative_to(ROOT)) for path in sources
              if re.search(r"^\s*(import structlog|from structlog)", path.read_text(), flags=re.MULTILINE)]
    assert direct == ["tradewarden/log.py"]
