"""
The wheel holds what an install needs: the package, the web demo, the
twistd plugin without an C{__init__.py} that would shadow Twisted's own
C{twisted.plugins}, and the C{lhttp} console script.
"""

import configparser
import shutil
import subprocess
import sys
import zipfile

from procs import ROOT

IGNORED = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", "node_modules",
    "test-artifacts", "build-*", "twistd.pid", "dropin.cache", ".hypothesis",
)


def test_wheelContents(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=IGNORED)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)],
        check=True, timeout=240, capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("lhttp-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entryPoints] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = configparser.ConfigParser()
        scripts.read_string(archive.read(entryPoints).decode())
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = archive.read(metadata).decode()

    assert "twisted/plugins/lhttp_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not [n for n in names if n.startswith("twisted/") and n != "twisted/plugins/lhttp_plugin.py"]
    web = {p.name for p in (ROOT / "lhttp" / "web").iterdir()}
    assert web and {f"lhttp/web/{name}" for name in web} <= names
    for module in ("cli", "client", "metrics", "logs", "tap", "server"):
        assert f"lhttp/{module}.py" in names
    assert scripts["console_scripts"]["lhttp"].strip() == "lhttp.cli:main"
    assert "Requires-Dist: prometheus_client" in requires or "Requires-Dist: prometheus-client" in requires
