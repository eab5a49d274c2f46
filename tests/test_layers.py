"""The house reads top-down: no import runs back up the layers.

Every module's imports are read from its syntax tree (module level and inside functions alike, so a lazy
import counts as much as one at the top) and each rule names the modules it is about:

- the back office reaches the terminal only through the fleet contract, money and the staff hashing;
- ``terminal/fleet/`` holds foundations: it imports neither the service, the config, the payments, the
  runner, the kiosk, the CLI nor the agent above it;
- the core (the checkout machine, money, the ledger, the data folder, the mode names) imports nothing above it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BACKOFFICE_MAY_IMPORT = {"terminal.fleet.contract", "terminal.money", "terminal.staff"}
# What loading those runs besides (parent packages, and the contract's one import: the mode names).
BACKOFFICE_MAY_LOAD = BACKOFFICE_MAY_IMPORT | {"terminal", "terminal.fleet", "terminal.modes"}
ABOVE_FLEET = ("terminal.service", "terminal.config", "terminal.payments", "terminal.runner", "terminal.ui",
               "terminal.cli", "terminal.fleet_agent")
CORE = ("terminal.checkout", "terminal.money", "terminal.ledger", "terminal.datadir", "terminal.modes")
ABOVE_CORE = ("terminal.ui", "terminal.runner", "terminal.cli", "terminal.service", "terminal.fleet",
              "terminal.fleet_agent", "terminal.config")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str, root: Path) -> bool:
    p = root.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in ``path``, relative ones resolved; ``from X import y`` names X.y
    when that is a module, else X."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((node.lineno, sub if is_module(sub, root) else base))
    return found


def under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def sources(root: Path, *tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (root / top).rglob("*.py"))


def violations(root: Path) -> list[str]:
    bad = []
    for path in sources(root, "backoffice", "terminal"):
        name = module_name(path, root)
        for line, target in imports_of(path, root):
            where = f"{path.relative_to(root)}:{line} imports {target}"
            if under(name, ["backoffice"]) and under(target, ["terminal"]) and target not in BACKOFFICE_MAY_IMPORT:
                bad.append(f"{where}: the back office may import only {sorted(BACKOFFICE_MAY_IMPORT)}")
            if under(name, ["terminal.fleet"]) and under(target, ABOVE_FLEET):
                bad.append(f"{where}: terminal/fleet/ holds foundations and imports nothing above it")
            if under(name, CORE) and under(target, ABOVE_CORE):
                bad.append(f"{where}: the core imports nothing above it")
    return bad


def test_no_import_runs_back_up_the_layers():
    assert violations(ROOT) == []


def test_the_rules_see_what_they_forbid(tmp_path):
    """Each rule, shown one module that breaks it: an absolute import, a relative one and a lazy one."""
    files = {
        "terminal/__init__.py": "",
        "terminal/config.py": "",
        "terminal/money.py": "",
        "terminal/service.py": "",
        "terminal/fleet/__init__.py": "",
        "terminal/fleet/contract.py": "",
        "terminal/fleet/link.py": "from ..payments import journal\n",
        "terminal/payments/__init__.py": "",
        "terminal/payments/journal.py": "",
        "terminal/ledger.py": "def f():\n    from .fleet import outbox\n",
        "terminal/fleet/outbox.py": "",
        "backoffice/__init__.py": "",
        "backoffice/web.py": "from terminal.fleet import contract\nfrom terminal.money import x\nimport terminal.config\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert violations(tmp_path) == [
        "backoffice/web.py:3 imports terminal.config: the back office may import only "
        "['terminal.fleet.contract', 'terminal.money', 'terminal.staff']",
        "terminal/fleet/link.py:1 imports terminal.payments.journal: terminal/fleet/ holds foundations and "
        "imports nothing above it",
        "terminal/ledger.py:2 imports terminal.fleet.outbox: the core imports nothing above it",
    ]


@pytest.mark.parametrize("module", [module_name(p, ROOT) for p in sources(ROOT, "backoffice")])
def test_the_back_office_loads_no_kiosk_internals(module):
    """Importing a back-office module loads, of the terminal, only the contract, money and the staff hashing
    (and their parents): none of the kiosk's config, journal, models or service come along."""
    code = (f"import sys, json; import {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m == 'terminal' or m.startswith('terminal.'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert loaded - BACKOFFICE_MAY_LOAD == set()
