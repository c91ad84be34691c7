"""
The wheel holds what an install needs: the package, the web demo, the
twistd plugin without an C{__init__.py} that would shadow Twisted's own
C{twisted.plugins}, and the C{lhttp} console script; the wheel and the sdist
carry the license.
"""

import configparser
import hashlib
import tarfile
import shutil
import subprocess
import sys
import zipfile

from procs import ROOT

IGNORED = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", "node_modules",
    "test-artifacts", "build-*", "twistd.pid", "dropin.cache", ".hypothesis",
)


# SHA-256 of the Apache License 2.0's terms, from "TERMS AND CONDITIONS FOR
# USE" to "END OF TERMS AND CONDITIONS", as in
# https://www.apache.org/licenses/LICENSE-2.0.txt (whose whole text hashes to
# cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30).
APACHE_2_TERMS_SHA256 = "243932e1963a57cfc9aee6db62842b6ba89ecd63eee669a0bc80547bc600c34a"


def buildWheel(tmp_path):
    """
    Build the wheel from a clean copy of the source tree.

    @return: the wheel's path.
    """
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=IGNORED)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)],
        check=True, timeout=240, capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("lhttp-*.whl")
    return wheel


def test_wheelContents(tmp_path):
    wheel = buildWheel(tmp_path)
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
    # Every module and the demo's static files, wherever they sit.
    shipped = {
        str(p.relative_to(ROOT)) for p in (ROOT / "lhttp").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert {"lhttp/web/static/lhttp.js", "lhttp/brokers/nats.py", "lhttp/upstream/agent.py"} <= shipped
    assert shipped <= names, sorted(shipped - names)
    assert scripts["console_scripts"]["lhttp"].strip() == "lhttp.cli:main"
    assert "Requires-Dist: prometheus_client" in requires or "Requires-Dist: prometheus-client" in requires


def test_licenseIsApache2AndShips(tmp_path):
    """
    setup.cfg says Apache-2.0: LICENSE at the root is the license's standard
    text (the appendix may carry the project's copyright line), setup.cfg
    lists it, and the wheel and the sdist carry it.
    """
    license = ROOT / "LICENSE"
    assert license.is_file(), "no LICENSE at the repository root"
    text = license.read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    terms = text[
        text.index("TERMS AND CONDITIONS FOR USE"):
        text.index("END OF TERMS AND CONDITIONS") + len("END OF TERMS AND CONDITIONS")
    ]
    assert hashlib.sha256(terms.encode()).hexdigest() == APACHE_2_TERMS_SHA256

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["license"] == "Apache-2.0"
    assert "LICENSE" in config["metadata"].get("license_files", "").split()

    with zipfile.ZipFile(buildWheel(tmp_path)) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "License-File: LICENSE" in archive.read(metadata).decode().splitlines()
        [shipped] = [
            n for n in names
            if n.endswith((".dist-info/LICENSE", ".dist-info/licenses/LICENSE"))
        ]
        assert archive.read(shipped).decode() == text

    source, dist = tmp_path / "src", tmp_path / "sdist"
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])",
         str(dist)],
        check=True, timeout=240, capture_output=True, cwd=source,
    )
    [sdist] = dist.glob("lhttp-*.tar.gz")
    with tarfile.open(sdist) as archive:
        [member] = [m for m in archive.getnames() if m.count("/") == 1 and m.endswith("/LICENSE")]
        assert archive.extractfile(member).read().decode() == text
