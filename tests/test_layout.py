"""The package's layout: no module reaches into another's private names (a leading underscore means "this
module's own"), and serving does not bounce between recommender.py and serve.py through lazy imports."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# recmaml/connectors is a link to connectors/ in a source checkout: read once, as connectors/
PACKAGE_FILES = sorted([*(path for path in ROOT.glob("recmaml/**/*.py") if path.parent.name != "connectors"),
                        *ROOT.glob("connectors/*.py")])
SERVING = ("recmaml.serve", "recmaml.cold", "recmaml.scoring")


def _imports(path: Path):
    """(line, module, name) of every `from recmaml... import name` in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recmaml"):
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def _lazy_imports(path: Path):
    """(line, module) of every import of a recmaml module made inside a function of the file."""
    for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recmaml"):
                    yield node.lineno, node.module + "".join(f" {a.name}" for a in node.names)


def test_no_module_imports_another_modules_private_names():
    crossing = [f"{path.relative_to(ROOT)}:{line}: {module}.{name}" for path in PACKAGE_FILES
                for line, module, name in _imports(path)
                if name.startswith("_") and not name.startswith("__")]
    assert not crossing, "private names imported across modules:\n" + "\n".join(crossing)


def test_the_package_files_are_found():
    names = {path.name for path in PACKAGE_FILES}
    assert {"recommender.py", "serve.py", "readers.py", "files.py"} <= names
    assert {"training.py", "flags.py", "common.py"} <= names  # recmaml/cli/


def test_serving_does_not_bounce_between_the_facade_and_the_pipeline():
    """recommender.py imports the serving pipeline once, at the top; the pipeline's modules never import
    the facade (they are handed a fitted MetaRecommender)."""
    recommender = ROOT / "recmaml" / "recommender.py"
    lazy = [f"recommender.py:{line}: {what}" for line, what in _lazy_imports(recommender)
            if what.split()[0] in SERVING or what.startswith("recmaml ") and set(what.split()[1:]) & {"serve", "cold", "scoring"}]
    upward = [f"{path.name}:{line}: {module}" for path in PACKAGE_FILES
              if f"recmaml.{path.stem}" in SERVING for line, module, _ in _imports(path) if module == "recmaml.recommender"]
    assert not lazy and not upward, "\n".join(lazy + upward)
