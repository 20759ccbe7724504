"""SIGKILL `python -m precompute run` at many points; the same command then completes, and the bundle
equals that of an uninterrupted run (every array and thumbnail byte for byte, and `report --json`).

The kills are real: `VRF_TEST_KILL_AT=<point>[#n]` makes the process SIGKILL itself at a named point
(vrf_core.filesafe.kill_point; the points are listed in docs/bundle.md). Each killed run resumes the work of
the one before, so one chain covers every point at the cost of about one full run.

UMAP's JIT compilation costs ~20 s per process, so the embedding step is left out by default;
`VRF_TEST_UMAP=1` adds it (and a kill during it) to the chain.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import tiny_config, tiny_local_dir

from precompute.__main__ import main as cli
from vrf_core.bundle import open_bundle
from vrf_core.filesafe import KILL_ENV

ROOT = Path(__file__).resolve().parents[1]

UMAP = os.environ.get("VRF_TEST_UMAP") == "1"
# In pipeline order; each run is killed at one point and the next one resumes from there.
KILL_CHAIN = [
    "finetune-epoch",          # after the first epoch's checkpoint
    "extract-batch:test",      # in the middle of extracting a split (train and val are done)
    "extract-publish:sketch",  # one model's outputs of a split published, the others not yet
    "knn",                     # after the ZSF kNN search, some bundle arrays staged
    "scores:val",              # during the per-split distances and scores
    "bundle-put#40",           # while staging the bundle arrays
    *(["umap"] if UMAP else []),  # during the embedding map (after every array but the maps is staged)
    "bundle-commit",           # old manifest gone, half of the new files moved into place
]


def crash_config(tmp: Path, model_dir: Path, out: str) -> Path:
    """The tiny run of tests/tiny.py with a data-loader worker in fine-tuning (and UMAP if asked)."""
    base = tmp / "run.toml"
    if not base.exists():
        tiny_config(tmp, model_dir, batch_size=8, workers=1)
    text = base.read_text().replace('out = "bundle"', f'out = "{out}"')
    if UMAP:
        text = text.replace("umap = false", "umap = true\numap_max_points = 200\numap_neighbors = 5")
    path = tmp / f"{out}.toml"
    path.write_text(text)
    return path


# Each run is a child forked from a helper that has only imported the libraries (nothing that starts a
# thread pool), which saves their import time per run; the kills are real SIGKILLs of those children.
FORK_SERVER = r"""
import json, os, sys, traceback
from pathlib import Path
import faiss, open_clip, precompute.__main__, precompute.pipeline, precompute.report
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.pop(req["env"], None)
        if req["kill"]:
            os.environ[req["env"]] = req["kill"]
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        try:
            scope = {"Path": Path, "precompute": precompute, "rc": 0}
            exec(req["code"], scope)
            rc = scope["rc"]
        except BaseException:
            traceback.print_exc()
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    _, status = os.waitpid(pid, 0)
    print(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)
"""


class Runner:
    def __init__(self, logs: Path):
        self.logs, self.n = logs, 0
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        env.pop(KILL_ENV, None)
        self.server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=ROOT, env=env, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, code: str, kill_at: str | None = None) -> tuple[int, str]:
        """Runs `code` (setting `rc`) in a fresh child: (exit status, negative for a signal; its log)."""
        self.n += 1
        log = self.logs / f"run{self.n}.log"
        self.server.stdin.write(json.dumps({"code": code, "kill": kill_at, "env": KILL_ENV, "log": str(log)}) + "\n")
        self.server.stdin.flush()
        return int(self.server.stdout.readline()), log.read_text()[-3000:]

    def precompute(self, config: Path, kill_at: str | None = None) -> tuple[int, str]:
        return self.run(f"rc = precompute.__main__.main(['run', '--config', {str(config)!r}])", kill_at)


def report_json(bundle: Path, capsys) -> dict:
    capsys.readouterr()
    assert cli(["report", str(bundle), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    rep.pop("bundle")
    return rep


def bundle_files(bundle: Path) -> dict[str, bytes]:
    return {p.relative_to(bundle).as_posix(): p.read_bytes() for p in sorted((bundle / "splits").rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    runner = Runner(tmp_path_factory.mktemp("logs"))
    yield runner
    runner.server.kill()
    runner.server.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, runner):
    tmp = tmp_path_factory.mktemp("crash")
    model_dir = tiny_local_dir(tmp / "model")
    rc, log = runner.precompute(crash_config(tmp, model_dir, "reference"))
    assert rc == 0, log
    return tmp, model_dir


def test_killed_runs_resume_to_the_uninterrupted_bundle(reference, runner, capsys):
    tmp, model_dir = reference
    config = crash_config(tmp, model_dir, "crashed")
    out = tmp / "crashed"
    # An earlier build stands in the output folder: every reader between the kills must find it intact.
    out.mkdir()
    shutil.copytree(tmp / "reference" / "splits", out / "splits")
    manifest = json.loads((tmp / "reference" / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "assemble_key": "an earlier build"}))
    for point in KILL_CHAIN:
        rc, log = runner.precompute(config, point)
        assert rc == -signal.SIGKILL, f"{point}: not killed there (exit status {rc})\n{log}"
        if point != "bundle-commit":
            assert open_bundle(out, verify=True).manifest["assemble_key"] == "an earlier build", point
    assert not (out / "manifest.json").exists()  # killed between removing the old manifest and writing the new
    # The resuming run is the real command line.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop(KILL_ENV, None)
    final = subprocess.run([sys.executable, "-m", "precompute", "run", "--config", str(config)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]

    resumed, expected_bundle = open_bundle(out, verify=True), open_bundle(tmp / "reference", verify=True)
    files, expected = bundle_files(out), bundle_files(tmp / "reference")
    assert sorted(files) == sorted(expected)
    assert [f for f in expected if files[f] != expected[f]] == []
    assert {r: i["sha256"] for r, i in resumed.manifest["files"].items()} == \
        {r: i["sha256"] for r, i in expected_bundle.manifest["files"].items()}
    assert report_json(out, capsys) == report_json(tmp / "reference", capsys)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial")) and not (out / ".staging").exists()


def test_a_kill_inside_an_atomic_write_leaves_the_old_file(runner, tmp_path):
    """The temporary file of an interrupted write is never mistaken for the real one."""
    target = tmp_path / "a.json"
    target.write_text('{"old": true}')
    code = f"from vrf_core.filesafe import atomic_write_json; atomic_write_json(Path({str(target)!r}), {{'new': 1}})"
    rc, log = runner.run(code, "atomic-rename")
    assert rc == -signal.SIGKILL, log
    assert json.loads(target.read_text()) == {"old": True}
    assert len(list(tmp_path.glob(".a.json.*.tmp"))) == 1
