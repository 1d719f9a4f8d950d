"""No committed text file names a path that exists only on the machine it was written on.

Documentation, READMEs, docstrings and help texts must work for a reader elsewhere: data is taken
from a folder the reader names (``DATA=/path/to/your/data`` once, then ``$DATA/...``), and where
public material comes from is said by repository, commit and path, not by a local folder.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()

# Home and work folders of a user or a machine, and paths that leave the repository for a
# neighbouring checkout or data folder (a relative path up and into a sibling folder).
LOCAL_PATH = re.compile(
    r"(?<![\w.~-])/(?:work|home|Users|mnt|scratch)/"
    r"|(?<![\w.])(?:\.\./)+(?:shared|data|datasets)\b"
    r"|\b[A-Za-z]:\\(?:Users|work)\\"
    r"|(?:^|[\s\"'=(`])/(?:data|datasets|models)/"
)
# Folders that hold no committed source (when git cannot list the committed files).
NOT_COMMITTED = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache",
                 ".hypothesis", "_build", "build", "dist", "runs", "data", "node_modules"}
# Files another change is rewriting; each entry must still need its exemption (checked below).
PENDING: set[str] = set()  # files allowed to keep a machine-local path for now (none)


def committed_files() -> list[Path]:
    """The files git tracks (or, outside a git checkout, every file not under a build folder)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                                check=True, timeout=60).stdout.decode()
        return [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        return [
            path for path in ROOT.rglob("*")
            if path.is_file() and not NOT_COMMITTED & set(path.relative_to(ROOT).parts)
            and not any(part.endswith(".egg-info") for part in path.parts)
        ]


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file (NUL bytes or not UTF-8) or a missing one."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def local_paths(text: str) -> list[str]:
    """``line: text`` of every line that names a machine-local path."""
    return [
        f"{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), 1)
        if LOCAL_PATH.search(line)
    ]


def offenders(files: list[Path]) -> dict[str, list[str]]:
    found = {}
    for path in files:
        if path.resolve() == THIS:
            continue  # this file spells the patterns out
        text = text_of(path)
        if text is not None and (hits := local_paths(text)):
            found[path.relative_to(ROOT).as_posix()] = hits
    return found


def test_the_pattern_finds_local_paths_and_leaves_ordinary_ones():
    # spelled with placeholders, so that this file itself names no machine-local path
    parts = {"W": "work", "H": "home", "S": "shared", "U": "Users", "M": "mnt", "D": "data",
             "O": "models"}
    local = [s.format(**parts) for s in (
        "see /{W}/{S}/{D}/cmu-mosi/label.csv", "--labels ../{S}/{D}/x.csv",
        "cd /{H}/user/mtobjectives", "open /{U}/me/{D}", "C:\\{U}\\me\\{D}",
        "`../../{D}/mosi`", "python x.py --data /{M}/{D}/MOSI.pkl",
        "--data /{D}/MOSI/Processed/unaligned_50.pkl", "--text-model /{O}/bert",
    )]
    ordinary = [s.format(**parts) for s in (
        "--data \"$DATA/MOSI/Processed/unaligned_50.pkl\"", "runs/real/mosi_text.pkl",
        "https://docs.python.org/3/library/pathlib.html", "examples/dmmsa/data.py",
        "docs/_build/html", "the network/{W}/ratio", "~/{W}/ is yours",
        "from ..{D} import x", "DATA=/path/to/your/{D}", "OUT/{D}/synthetic.pkl",
        "--text-model /path/to/bert-base-uncased",
    )]
    assert [s for s in local if not LOCAL_PATH.search(s)] == []
    assert [s for s in ordinary if LOCAL_PATH.search(s)] == []


def test_no_committed_text_file_names_a_machine_local_path():
    files = committed_files()
    assert any(f.name == "pyproject.toml" for f in files), "found no committed file"
    found = {name: hits for name, hits in offenders(files).items() if name not in PENDING}
    assert found == {}, "machine-local paths (use $DATA or say the public source instead):\n" + \
        "\n".join(f"{name}:{hit}" for name, hits in found.items() for hit in hits)


def test_every_pending_exemption_is_still_needed():
    found = offenders([ROOT / name for name in sorted(PENDING)])
    stale = sorted(PENDING - set(found))
    assert stale == [], f"no machine-local path left in {stale}: remove them from PENDING"
