"""`pip install .` (a wheel, not an editable install) ships the checkpoint and the lessons."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_a_wheel_in_a_fresh_venv_finds_the_shipped_checkpoint_and_lessons(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)], check=True)
    (wheel,) = (tmp_path / "dist").glob("searc-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)], check=True)
    # The dependencies (torch, transformers, the bundled models) come from this environment's
    # site-packages, added by path only: its .pth files (this checkout's editable install) are not run.
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = dict(cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300)

    where = subprocess.run([str(python), "-c", "import searc, searc.lessons as l; print(searc.__file__); print(len(l.load_lessons()))"], **run)
    assert where.returncode == 0, where.stderr
    package, lessons = where.stdout.split()
    assert Path(package).is_relative_to(env_dir) and int(lessons) == len(list((ROOT / "assets" / "lessons").glob("*.json")))

    probe = subprocess.run(
        [str(env_dir / "bin" / "searc"), "probe", "--edit", "The Eiffel Tower is located in the city of|Rome",
         "--probe", "The Eiffel Tower stands in the city of"], **run,
    )
    assert probe.returncode == 0, probe.stderr
    checkpoint = probe.stdout.splitlines()[0]
    assert checkpoint == f"checkpoint: {site / 'searc' / 'assets' / 'checkpoint'}", probe.stdout
    assert "Rome" in probe.stdout
