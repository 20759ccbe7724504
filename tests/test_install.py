"""vrf-lab as an installable package: the `vrf-lab` console command and its subcommands, and installs of
the source tree (editable and not) into fresh virtual environments that run it from another folder.

The fresh environments reuse the heavy dependencies (torch, open_clip, Streamlit, ...) of the environment
running the tests through a .pth file, so an install takes seconds and needs no network: what is tested is
the package itself (metadata, entry point, modules, package data), installed with `--no-deps`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import textwrap
import time
import types
import urllib.request
from pathlib import Path

import pytest

import precompute.__main__ as precompute_main
from dashboard.__main__ import APP
from precompute.cli import build_vrf_lab_parser, streamlit_options
from precompute.cli import main as vrf_lab

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vrf_core", "precompute", "dashboard")
NOT_NEEDED_AT_RUN_TIME = {"dashboard/README.md"}  # package files an install may leave out
PRECOMPUTE_VERBS = ("demo", "run", "report", "check", "gc", "synthetic")


# ---- the console command, in this process -------------------------------------------------

def subcommands(parser) -> set[str]:
    [action] = [a for a in parser._actions if a.dest == "command"]
    return set(action.choices)


def test_vrf_lab_has_every_precompute_subcommand_and_dashboard():
    assert subcommands(build_vrf_lab_parser()) == subcommands(precompute_main.build_parser()) | {"dashboard"}
    assert set(PRECOMPUTE_VERBS) <= subcommands(build_vrf_lab_parser())
    for module, verb in (("precompute.importer", "import"), ("precompute.convert", "convert")):
        if importlib.util.find_spec(module) is not None:  # added by their own modules (SUBCOMMAND_MODULES)
            assert verb in subcommands(build_vrf_lab_parser())


def fake_subcommand_module(name: str, calls: list) -> types.ModuleType:
    """What precompute/importer.py and precompute/convert.py provide: register(subparsers) and run(args)."""
    class FakeUserError(ValueError):
        pass

    def register(subparsers):
        p = subparsers.add_parser("import", help="import a bundle")
        p.add_argument("source")

    def run(args):
        calls.append(args.source)
        if args.source == "bad":
            raise FakeUserError("bad: not a bundle")
        return 3 if args.source == "three" else None

    module = types.ModuleType(name)
    module.register, module.run, module.USER_ERRORS = register, run, (FakeUserError,)
    return module


def test_subcommand_modules_are_registered_and_run(monkeypatch, capsys):
    calls = []
    monkeypatch.setitem(sys.modules, "fake_importer", fake_subcommand_module("fake_importer", calls))
    monkeypatch.setattr(precompute_main, "SUBCOMMAND_MODULES", ("fake_importer", "precompute.no_such_module"))
    assert "import" in subcommands(build_vrf_lab_parser())
    assert precompute_main.main(["import", "ok"]) == 0
    assert vrf_lab(["import", "three"]) == 3
    assert vrf_lab(["import", "bad"]) == 2
    assert capsys.readouterr().err.strip() == "error: bad: not a bundle"
    assert calls == ["ok", "three", "bad"]


def test_a_subcommand_module_that_fails_to_import_is_not_hidden(tmp_path, monkeypatch):
    """Only a module that does not exist is skipped; one that exists but imports something missing fails."""
    monkeypatch.setattr(precompute_main, "SUBCOMMAND_MODULES", ("json.no_such_module",))
    assert "dashboard" in subcommands(build_vrf_lab_parser())
    (tmp_path / "broken_importer.py").write_text("import no_such_dependency_of_the_importer\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(precompute_main, "SUBCOMMAND_MODULES", ("broken_importer",))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_of_the_importer"):
        build_vrf_lab_parser()


def test_vrf_lab_runs_a_precompute_verb(synthetic_bundles, capsys):
    assert vrf_lab(["check", str(synthetic_bundles / "synth")]) == 0
    assert "files verified" in capsys.readouterr().out
    assert vrf_lab(["check", str(synthetic_bundles / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_dashboard_subcommand_starts_the_app_next_to_the_launcher(tmp_path, monkeypatch):
    from dashboard.__main__ import streamlit_argv

    monkeypatch.chdir(tmp_path)
    args = build_vrf_lab_parser().parse_args(["dashboard", "--bundles", "mine", "--port", "8600", "--headless"])
    argv = streamlit_argv(streamlit_options(args))
    assert argv[:3] == ["streamlit", "run", str(APP)] and APP.is_file()
    options = dict(zip(argv[3:argv.index("--")][::2], argv[3:argv.index("--")][1::2]))
    assert options["--server.port"] == "8600" and options["--server.headless"] == "true"
    assert options["--server.address"] == "127.0.0.1" and options["--browser.gatherUsageStats"] == "false"
    assert argv[argv.index("--"):] == ["--", "--bundles", str(tmp_path / "mine")]  # absolute


# ---- installs into fresh environments ------------------------------------------------------

def copy_source_tree(dest: Path) -> Path:
    """What an install reads (pyproject.toml, README.md, the packages), copied so that a build writes nothing
    into the working tree."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def fresh_venv(path: Path) -> Path:
    """A new virtual environment seeing this environment's packages (torch, pip, setuptools, ...) after its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site_packages = Path(subprocess.check_output(
        [str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    (site_packages / "deps_of_the_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path


def pip_install(venv: Path, *args: str) -> float:
    """Seconds taken by `pip install --no-deps` (offline: no index, the build backend from this environment)."""
    start = time.perf_counter()
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--disable-pip-version-check", *args], check=True)
    return time.perf_counter() - start


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1"}


def run_in(venv: Path, cwd: Path, *command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """A command of the venv (`vrf-lab`, `python`) from `cwd`, outside the repository."""
    exe = str(venv / "bin" / command[0])
    done = subprocess.run([exe, *command[1:]], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def imported_from(venv: Path, cwd: Path) -> dict[str, str]:
    out = run_in(venv, cwd, "python", "-c", "import json, vrf_core, precompute, dashboard; print(json.dumps("
                 "{m.__name__: m.__file__ for m in (vrf_core, precompute, dashboard)}))").stdout
    return json.loads(out)


def test_editable_install_gives_the_vrf_lab_command(tmp_path):
    source = copy_source_tree(tmp_path / "src")
    venv = fresh_venv(tmp_path / "venv")
    seconds = pip_install(venv, "-e", str(source))
    print(f"editable install: {seconds:.1f} s")
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert "dashboard" in run_in(venv, work, "vrf-lab", "--help").stdout
    assert "--small" in run_in(venv, work, "vrf-lab", "demo", "--help").stdout
    assert "--recompute" in run_in(venv, work, "vrf-lab", "report", "--help").stdout
    assert "--bundles" in run_in(venv, work, "vrf-lab", "dashboard", "--help").stdout
    for verb in ("import", "convert"):
        if verb in subcommands(build_vrf_lab_parser()):
            assert "usage: vrf-lab " + verb in run_in(venv, work, "vrf-lab", verb, "--help").stdout
    assert all(Path(f).is_relative_to(source) for f in imported_from(venv, work).values())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(venv, a working folder outside the repository) with vrf-lab installed from a wheel (not editable)."""
    root = tmp_path_factory.mktemp("installed")
    venv = fresh_venv(root / "venv")
    seconds = pip_install(venv, str(copy_source_tree(root / "src")))
    print(f"non-editable install: {seconds:.1f} s")
    work = root / "work"
    work.mkdir()
    return venv, work


def test_installed_package_runs_from_site_packages(installed):
    venv, work = installed
    site_packages = Path(run_in(venv, work, "python", "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    assert all(Path(f).is_relative_to(site_packages) for f in imported_from(venv, work).values())
    version = run_in(venv, work, "python", "-c", "from importlib.metadata import version; print(version('vrf-lab'))")
    from vrf_core import __version__
    assert version.stdout.strip() == __version__


def test_installed_package_holds_every_file_of_the_packages(installed):
    """Every module and data file of vrf_core, precompute and dashboard (a new subpackage or data folder
    fails here until pyproject.toml lists it)."""
    venv, work = installed
    site_packages = Path(run_in(venv, work, "python", "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    expected = {str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    missing = sorted(f for f in expected - NOT_NEEDED_AT_RUN_TIME if not (site_packages / f).is_file())
    assert not missing, f"not installed (add to [tool.setuptools] in pyproject.toml): {missing}"


def test_installed_package_data_works(installed, synthetic_bundles):
    """`vrf-lab check` and `report` on a bundle, the benchmark class lists, and the shipped demo weights
    (their key covers the demo world's source: it must match from the installed copy too)."""
    venv, work = installed
    bundle = str(synthetic_bundles / "synth")
    assert "files verified" in run_in(venv, work, "vrf-lab", "check", bundle).stdout
    report = json.loads(run_in(venv, work, "vrf-lab", "report", bundle, "--json").stdout)
    assert report
    script = textwrap.dedent("""
        import tempfile
        from pathlib import Path
        from precompute.demo_world.pretrain import PretrainRecipe
        from precompute.demo_world.ship import install_shipped
        from vrf_core.datasets import metadata
        assert len(metadata.imagenet_classnames()) == 1000 and len(metadata.entity30_classnames()) > 0
        assert len(metadata.objectnet_classes()) > 0 and len(metadata.stl10_to_cifar10_labels()) > 0
        with tempfile.TemporaryDirectory() as tmp:
            assert install_shipped(Path(tmp) / "clip", 0, PretrainRecipe()), "shipped weights not used"
        print("ok")
    """)
    assert run_in(venv, work, "python", "-c", script).stdout.strip() == "ok"


def test_installed_dashboard_app_runs(installed, synthetic_bundles):
    venv, work = installed
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from streamlit.testing.v1 import AppTest
        import dashboard
        os.environ["VRF_BUNDLES"] = {str(synthetic_bundles)!r}
        at = AppTest.from_file(str(Path(dashboard.__file__).with_name("app.py")), default_timeout=120).run()
        assert not at.exception, [e.message for e in at.exception]
        assert any(m.label.startswith("VRF") for m in at.metric), [m.label for m in at.metric]
        print("ok")
    """)
    assert run_in(venv, work, "python", "-c", script).stdout.strip() == "ok"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_installed_vrf_lab_dashboard_serves(installed, synthetic_bundles):
    venv, work = installed
    port = free_port()
    server = subprocess.Popen([str(venv / "bin" / "vrf-lab"), "dashboard", "--bundles", str(synthetic_bundles),
                               "--port", str(port), "--headless"], cwd=work, env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, health = time.monotonic() + 90, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    health = response.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert health == "ok", f"no dashboard on port {port}: {server.poll()=}"
    finally:
        server.terminate()
        try:
            output = server.communicate(timeout=20)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0].decode(errors="replace")
    assert f"http://127.0.0.1:{port}" in output
