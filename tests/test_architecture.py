"""The package's layers, read from its imports: quantization and pruning build only on the bottom layer."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"
BOTTOM = {  # module: the toolkit modules it may import
    "toolkit.artifacts": set(),
    "toolkit.runtime": set(),
    "toolkit.data": {"toolkit.artifacts", "toolkit.runtime"},
    "toolkit.layers": {"toolkit.data", "toolkit.runtime"},
}
LIBRARY_BASE = set(BOTTOM)  # what quant/ and prune/ may import besides their own modules


def toolkit_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every toolkit import in a file, at any depth (inside functions too);
    ``from toolkit import x`` counts as ``toolkit.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "toolkit"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "toolkit":
            if node.module == "toolkit":
                found += [(node.lineno, f"toolkit.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ALLOWED = {"quant": LIBRARY_BASE, "prune": LIBRARY_BASE,
           "llm": LIBRARY_BASE | {"toolkit.quant", "toolkit.quant.packing", "toolkit.quant.smooth"}}  # chapter 10 builds on
           # chapter 2's bit packing and chapter 5's SmoothQuant scales


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_quant_prune_and_llm_import_only_the_layers_below_and_themselves(subpackage):
    own, allowed = f"toolkit.{subpackage}", ALLOWED[subpackage]
    wrong = [f"{path.name}:{line}: {module}" for path in sorted((PACKAGE / subpackage).glob("*.py"))
             for line, module in toolkit_imports(path)
             if not (module == own or module.startswith(own + ".") or module in allowed)]
    assert not wrong, f"{own} imports upward or sideways (allowed: {sorted(allowed)}):\n" + "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(BOTTOM))
def test_the_bottom_layer_imports_only_below_itself(module):
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    imported = {m for _, m in toolkit_imports(path)}
    assert imported <= BOTTOM[module], f"{module} imports {sorted(imported - BOTTOM[module])}"


def test_the_checker_sees_every_kind_of_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import toolkit.measure\nfrom toolkit import train\nfrom toolkit.prune.gradual import x\n"
                      "def f():\n    from toolkit.activations import y\n")
    assert [m for _, m in toolkit_imports(sample)] == ["toolkit.measure", "toolkit.train", "toolkit.prune.gradual",
                                                        "toolkit.activations"]


@pytest.mark.parametrize("package", ["toolkit", "toolkit.workbook", "toolkit.engines", "toolkit.llm"])
def test_the_package_map_lists_every_module(package):
    import importlib

    module = importlib.import_module(package)
    folder = PACKAGE.parent / package.replace(".", "/")
    on_disk = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    assert set(module.SUBMODULES) == on_disk
    assert all(f"``{name}``" in module.__doc__ for name in on_disk), "each module has a line in the docstring's map"
    assert all(getattr(module, name).__name__ == f"{package}.{name}" for name in on_disk)


def test_the_library_does_not_import_the_workbook():
    wrong = [f"{path.relative_to(PACKAGE)}:{line}: {module}" for path in sorted(PACKAGE.rglob("*.py"))
             if "workbook" not in path.parts for line, module in toolkit_imports(path)
             if module == "toolkit.workbook" or module.startswith("toolkit.workbook.")]
    assert not wrong, "the library imports the workbook's machinery:\n" + "\n".join(wrong)


def test_import_toolkit_has_no_side_effects():
    import subprocess
    import sys

    probe = ("import logging, os, sys; before = (dict(os.environ), logging.getLogger('transformers.modeling_utils').level); "
             "import toolkit; assert (dict(os.environ), logging.getLogger('transformers.modeling_utils').level) == before; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('toolkit', 'torch', 'transformers', 'torchao')))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['toolkit']"


@pytest.mark.parametrize("package", ["toolkit.quant", "toolkit.prune", "toolkit.workbook.report"])
def test_every_module_has_a_line_in_its_package_docstring(package):
    import importlib

    module = importlib.import_module(package)
    folder = PACKAGE.parent / package.replace(".", "/")
    missing = [p.stem for p in folder.glob("*.py") if p.stem != "__init__" and f"``{p.stem}``" not in module.__doc__]
    assert not missing, f"{package}'s docstring does not map {missing}"
    assert all(hasattr(module, p.stem) for p in folder.glob("*.py") if p.stem != "__init__")
