# SPDX-License-Identifier: Apache-2.0
"""The user documents: every Python block runs as written, links resolve, the API reference covers the package."""

import glob
import os
import pkgutil
import re
import subprocess
import sys

import pytest

import pyro_kvae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
GPU_MARK = "# needs a GPU"


def python_blocks(path):
    text = open(os.path.join(ROOT, path)).read()
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if not b.startswith(GPU_MARK)]


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)])
def test_python_blocks_run_as_written(path, tmp_path):
    """The blocks of one document run in order in one fresh interpreter, from the repository root."""
    code = "\n".join(python_blocks(path))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, f"{path}:\n{out.stderr[-3000:]}"


@pytest.mark.parametrize("path", DOCS)
def test_local_links_resolve(path):
    text = open(os.path.join(ROOT, path)).read()
    base = os.path.dirname(os.path.join(ROOT, path))
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if "://" not in target:
            assert os.path.exists(os.path.join(base, target)), f"{path} links to {target}, which does not exist"


@pytest.mark.parametrize("path", DOCS)
def test_no_development_history_in_user_documents(path):
    text = open(os.path.join(ROOT, path)).read().lower()
    for phrase in ("this round", "last round", "previous round", "two rounds", "the previous machine", "this session"):
        assert phrase not in text, f"{path} says {phrase!r}"


def test_readme_is_short():
    assert len(open(os.path.join(ROOT, "README.md")).read().splitlines()) <= 200


def test_api_reference_covers_every_module():
    index = open(os.path.join(ROOT, "docs", "api", "index.rst")).read()
    documented = set(re.findall(r"automodule:: (\S+)", index))
    modules = {m.name for m in pkgutil.walk_packages(pyro_kvae.__path__, "pyro_kvae.")}
    public = {m for m in modules if not any(part.startswith("_") for part in m.split("."))}
    packages = {m for m in public if any(other.startswith(m + ".") for other in public)}  # documented by their modules
    assert public - packages - documented == set()


def test_version_and_top_level_api():
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert f'version = "{pyro_kvae.__version__}"' in text
    for name in pyro_kvae.__all__:
        assert getattr(pyro_kvae, name) is not None
