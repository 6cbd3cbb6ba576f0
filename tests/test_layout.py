"""The package's layout: no module reaches into another's private names (a leading underscore means "this
module's own"), and serving does not bounce between recommender.py and serve.py through lazy imports."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = sorted([*ROOT.glob("recmaml/*.py"), *ROOT.glob("recmaml/cli/*.py"), *ROOT.glob("connectors/*.py")])


def _imports(path: Path):
    """(line, module, name) of every `from recmaml... import name` in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recmaml"):
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def test_no_module_imports_another_modules_private_names():
    crossing = [f"{path.relative_to(ROOT)}:{line}: {module}.{name}" for path in PACKAGE_FILES
                for line, module, name in _imports(path)
                if name.startswith("_") and not name.startswith("__")]
    assert not crossing, "private names imported across modules:\n" + "\n".join(crossing)


def test_the_package_files_are_found():
    names = {path.name for path in PACKAGE_FILES}
    assert {"recommender.py", "serve.py", "readers.py", "files.py"} <= names
    assert {"training.py", "flags.py", "common.py"} <= names  # recmaml/cli/
