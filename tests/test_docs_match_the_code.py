"""docs/architecture.md against the code it describes: every Redis key and Lua script is
in its tables and the code of "How to add a job kind" is the
code that tests/test_add_a_kind.py runs."""

import inspect
import re
import textwrap
from pathlib import Path

from backend.jobs import keys
from tests import test_add_a_kind

REPO = Path(__file__).parents[1]
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text()


def section(title: str) -> str:
    """The text of the ``## title`` section of docs/architecture.md."""
    return ARCHITECTURE.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def key_names() -> dict[str, str]:
    """Every key name or template of backend/jobs/keys.py (its string constants), as the docs
    write it: ``result:{token}`` -> ``result:<token>``."""
    return {
        name: re.sub(r"\{(\w+)\}", r"<\1>", value)
        for name, value in vars(keys).items()
        if name.isupper() and isinstance(value, str)
    }


def test_every_redis_key_is_in_the_table():
    table = section("Redis keys")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    missing = [name for name, doc in key_names().items() if not any(row.startswith(f"| `{doc}") for row in rows)]
    assert not missing, f"docs/architecture.md's key table lacks {missing}"


def test_every_lua_script_is_in_the_table():
    table = section("The scripts")
    scripts = sorted(
        path.name for path in (REPO / "backend" / "jobs" / "lua").glob("*.lua") if path.name != "prelude.lua"
    )
    documented = set(re.findall(r"^\| (\w+\.lua) \|", table, re.MULTILINE))
    assert scripts and not set(scripts) - documented, f"the scripts table lacks {set(scripts) - documented}"


def test_the_guides_code_is_the_code_its_test_runs():
    guide = section("How to add a job kind")
    blocks = [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)^\s*```", guide, re.S | re.M)]
    declaration = re.search(r"^CHECKSUM = JobKind\(.*?^\)\n", inspect.getsource(test_add_a_kind), re.S | re.M)
    assert declaration is not None
    expected = [inspect.getsource(test_add_a_kind.sha256_hex), declaration.group(0)]
    assert blocks == [*expected, inspect.getsource(test_add_a_kind.run_checksum)]
