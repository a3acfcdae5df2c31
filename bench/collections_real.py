"""Real, non-photo image collections for benchmarks, from Debian packages.

Two kinds, each a set of distinct pictures drawn in one style, so that they
make many *hard negatives* (different pictures that look alike):

``"icons"``
    Oxygen desktop icons -- Debian package ``oxygen-icon-theme`` (pinned
    ``5:5.103.0-1``, bookworm; .deb 31.8 MB, 38 MB installed), licence
    LGPL-3+.  The PNG icons of the contexts ``apps``, ``devices`` and
    ``categories`` (application logos, hardware, menu categories), one file
    per icon name at the largest size shipped (256x256, else 128x128),
    returned as RGBA (transparent background: the caller composites).
    252 names -> 242 images in 188 families after de-duplication
    (10 near-identical files dropped, e.g. okular = graphics-viewer-document).

``"illustrations"``
    Art4Apps children's illustrations (hand-drawn clip art, one artist, one
    style, white background) shipped by Debian package ``pysiogame``
    (pinned ``4.20.01-1``; .deb 16.3 MB; ``apt-get install`` also pulls its
    dependencies python3-pygame, SDL2 libraries and two font packages), directory
    ``res/images/art4apps``.  Categories animals, food, fruit_n_veg,
    clothes_n_accessories, construction, transport and nature (actions,
    body, jobs, people and sport are left out: they are mostly the same
    drawings again with an arrow pointing at a part).  200x200 JPEG,
    returned as RGB.  Debian's copyright file lists pysiogame's images as
    public domain (Art4Apps' upstream licence is CC BY-SA 3.0).
    354 files -> 354 images in 337 families.

Distinctness.  Files with the same content (byte-identical, or within a
mean absolute difference of 2/255 at 64x64 RGBA) are kept once (first
name in sorted order).  Pictures that are variants of one design (colour /
light-dark versions, the same drawing with an arrow or an emblem added,
the same base with a different badge, mirrored re-uses) share a *family*
id: pairs within a family are "related", not false positives.  Families
are the union of (a) a curated list, checked by eye for the pinned
versions (``_CURATED``), and (b) two automatic tests on every pair:
aligned-edge agreement above a shifted baseline, and the best grayscale
correlation over small shifts (``_auto_links``).  The family id is the
first member name in sorted order.  Deliberately *not* grouped (kept as
hard negatives): different pictures in one template, e.g. the old KOffice
icons kchart/kformula/kivio/kplato/kpresenter/kspread/kword that share a
document frame, or car/van/truck drawn alike.

No wallpaper / background package is used (those are reserved for a
held-back check); icons whose name mentions wallpaper or background are
skipped too.

Usage::

    import collections_real as c
    c.ensure_installed()                      # both kinds; or ensure_installed("icons")
    items = c.load_collection("icons")        # [(name, PIL.Image RGBA, family), ...]
    items = c.load_collection("illustrations", n=200, seed=0)  # seeded sample

Only numpy and pillow are needed to import and load.  ``ensure_installed``
runs ``apt-get install -y -q --no-install-recommends PKG=VERSION`` when
root (falling back to the candidate version, then to ``apt-get update``
and a retry); when that is impossible (not root, dpkg locked) it runs
``apt-get download`` and unpacks the .deb with ``dpkg-deb -x`` into
``$XDG_CACHE_HOME/imagesieve-bench/<package>`` (default ``~/.cache``),
which ``load_collection`` also searches.  It raises ``RuntimeError`` with
the commands' output when all of that fails.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["KINDS", "PACKAGES", "ensure_installed", "load_collection", "collection_paths", "package_dir"]

# kind -> (package, pinned version, data dir relative to the package root)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "icons": ("oxygen-icon-theme", "5:5.103.0-1", "usr/share/icons/oxygen/base"),
    "illustrations": ("pysiogame", "4.20.01-1", "usr/share/games/pysiogame/res/images/art4apps"),
}
KINDS = tuple(PACKAGES)

_ICON_CONTEXTS = ("apps", "categories", "devices")
_ICON_SIZES = ("256x256", "128x128")  # preferred first
_ART_CATEGORIES = (
    "animals", "clothes_n_accessories", "construction", "food",
    "fruit_n_veg", "nature", "transport",
)
_SKIP_WORDS = ("wallpaper", "background")

# Families checked by eye on the pinned versions; members are names as
# returned by load_collection.  Near-identical files among them are removed
# as duplicates before grouping, so a family may end up with one member.
_CURATED: dict[str, list[list[str]]] = {
    "icons": [
        ["kopete", "kopete-offline"],
        ["graphics-viewer-document", "okular"],
        ["kjournal", "korg-journal"],
        ["korgac", "korganizer"],
        ["preferences-desktop-display", "preferences-desktop-display-color",
         "preferences-system-login", "video-display", "computer"],
        ["preferences-desktop-notification", "preferences-desktop-notification-bell"],
        ["preferences-desktop-user", "preferences-desktop-user-password"],
        ["preferences-system-bluetooth", "preferences-system-bluetooth-inactive"],
        ["preferences-system-windows", "preferences-system-windows-actions",
         "preferences-system-windows-move"],
        ["skrooge", "skrooge-black", "skrooge-initial"],
        ["applications-development", "applications-development-translation",
         "applications-development-web"],
        ["applications-education", "applications-education-school"],
        ["applications-education-preschool", "applications-toys"],
        ["applications-education-science", "applications-science"],
        ["preferences-other", "preferences-system", "preferences-desktop"],
        ["preferences-desktop-thunderbolt", "preferences-system-network-ethernet"],
        ["applications-utilities", "utilities-system-monitor"],
        ["audio-headphones", "audio-headset"],
        ["drive-optical", "drive-removable-media", "drive-removable-media-usb"],
        ["drive-harddisk", "partitionmanager"],
        ["media-optical", "media-optical-audio", "media-optical-blu-ray",
         "media-optical-data", "media-optical-dvd", "media-optical-dvd-data",
         "media-optical-dvd-video", "media-optical-mixed-cd",
         "media-optical-recordable", "media-optical-video"],
        ["network-wireless-connected-00", "network-wireless-connected-25",
         "network-wireless-connected-50", "network-wireless-connected-75",
         "network-wireless-connected-100", "network-wireless-disconnected"],
        ["accessories-dictionary", "kthesaurus", "artikulate"],
        ["preferences-kde-connect", "smartphone"],
        ["kaddressbook", "office-address-book"],
        ["digikam", "showfoto"],
        ["applications-multimedia", "kaffeine"],
        ["clock", "preferences-system-time"],
        ["preferences-desktop-accessibility", "preferences-desktop-text-to-speech"],
        ["preferences-desktop-locale", "lokalize", "applications-development-translation"],
        ["input-mouse", "preferences-desktop-mouse"],
        ["printer", "preferences-desktop-printer"],
        ["kmail2", "kontact-import-wizard", "zanshin"],
    ],
    "illustrations": [
        ["animals/lama", "animals/llama"],
        ["animals/frog", "animals/toad"],
        ["animals/deer", "animals/doe"],
        ["animals/dove", "animals/pigeon"],
        ["food/beef", "food/steak"],
        ["food/ham", "food/meat"],
        ["food/juice", "food/lemonade"],
        ["fruit_n_veg/apricot", "fruit_n_veg/kernel"],
        ["clothes_n_accessories/kimono", "clothes_n_accessories/sash"],
        ["clothes_n_accessories/overalls", "clothes_n_accessories/trousers"],
        ["construction/chimney", "construction/smoke"],
        ["transport/bicycle", "transport/bike", "transport/handlebar", "transport/pedal"],
        ["transport/mast", "transport/raft"],
        ["transport/sail", "transport/ship"],
        ["nature/mountain", "nature/peak"],
    ],
}

# Automatic linking thresholds per kind: (edge agreement over baseline,
# best shifted grayscale correlation).  Chosen by looking at the ranked
# pairs of the pinned versions: above them nearly every pair is a variant.
_AUTO_THRESHOLDS = {"icons": (0.24, 0.90), "illustrations": (0.10, 0.90)}
_DUP_MAD = 2.0  # mean |diff| (0..255) at 64x64 RGBA below which files are duplicates


# --------------------------------------------------------------------------
# locating / installing the packages

def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imagesieve-bench"


def _data_dirs(kind: str) -> list[Path]:
    pkg, _ver, rel = PACKAGES[kind]
    return [Path("/") / rel, _cache_root() / pkg / rel]


def _data_dir(kind: str) -> Path | None:
    for d in _data_dirs(kind):
        if d.is_dir() and any(d.iterdir()):
            return d
    return None


def _installed_version(kind: str, data_dir: Path) -> str | None:
    pkg, _ver, _rel = PACKAGES[kind]
    stamp = _cache_root() / pkg / "VERSION"
    if str(data_dir).startswith(str(_cache_root())) and stamp.is_file():
        return stamp.read_text().strip()
    return _dpkg_version(pkg)


def _dpkg_version(pkg: str) -> str | None:
    """The version of ``pkg`` installed on the system, per dpkg, or None."""
    if shutil.which("dpkg-query"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    return None


def _run(cmd: list[str], log: list[str]) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.append(f"$ {' '.join(cmd)}\n{e}")
        return False
    log.append(f"$ {' '.join(cmd)}  -> {r.returncode}\n{(r.stdout + r.stderr)[-2000:]}")
    return r.returncode == 0


def _apt_install(pkg: str, ver: str, log: list[str]) -> bool:
    if not shutil.which("apt-get") or os.geteuid() != 0:
        log.append("apt-get install skipped (no apt-get or not root)")
        return False
    base = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    for attempt in range(2):
        if _run(base + [f"{pkg}={ver}"], log) or _run(base + [pkg], log):
            return True
        if attempt == 0 and not _run(["apt-get", "update", "-q"], log):
            return False
    return False


def _apt_extract(pkg: str, ver: str, log: list[str]) -> bool:
    """apt-get download the .deb (no root needed) and unpack it into the cache."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        log.append("apt-get download skipped (no apt-get or dpkg-deb)")
        return False
    dest = _cache_root() / pkg
    dl = _cache_root() / "debs"
    dl.mkdir(parents=True, exist_ok=True)
    for spec in (f"{pkg}={ver}", pkg):
        for old in dl.glob(f"{pkg}_*.deb"):
            old.unlink()
        try:
            r = subprocess.run(["apt-get", "download", "-q", spec], cwd=dl,
                               capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.append(f"$ apt-get download {spec}\n{e}")
            continue
        log.append(f"$ apt-get download {spec}  -> {r.returncode}\n{(r.stdout + r.stderr)[-2000:]}")
        debs = sorted(dl.glob(f"{pkg}_*.deb"))
        if r.returncode == 0 and debs:
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            if not _run(["dpkg-deb", "-x", str(debs[0]), str(dest)], log):
                return False
            got = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Version"],
                                 capture_output=True, text=True).stdout.strip()
            (dest / "VERSION").write_text(got or "unknown")
            debs[0].unlink()
            return True
    return False


def ensure_installed(kind: str | None = None) -> None:
    """Make sure the package(s) behind ``kind`` (default: all kinds) are on disk."""
    kinds = KINDS if kind is None else (kind,)
    for k in kinds:
        if k not in PACKAGES:
            raise ValueError(f"unknown kind {k!r}; expected one of {KINDS}")
        if _data_dir(k) is not None:
            continue
        pkg, ver, _rel = PACKAGES[k]
        log: list[str] = []
        ok = _apt_install(pkg, ver, log) and _data_dir(k) is not None
        if not ok:
            ok = _apt_extract(pkg, ver, log) and _data_dir(k) is not None
        if not ok:
            raise RuntimeError(
                f"could not install Debian package {pkg} ({ver}) for collection {k!r}; "
                f"looked in {[str(d) for d in _data_dirs(k)]}.\n" + "\n".join(log))


def package_dir(pkg: str, ver: str, rel: str) -> Path:
    """``rel`` inside Debian package ``pkg`` (pinned ``ver``): where the
    system has that version installed, else unpacked into the cache
    (``apt-get download``, no root needed). A cached copy of another version
    (the pinned one could not be downloaded) is used with a warning on
    stderr: a benchmark's figures may then differ. RuntimeError when neither
    works."""
    system = Path("/") / rel
    if system.is_dir() and any(system.iterdir()) and _dpkg_version(pkg) == ver:
        return system
    cached, stamp = _cache_root() / pkg / rel, _cache_root() / pkg / "VERSION"
    if not (cached.is_dir() and any(cached.iterdir())):
        log: list[str] = []
        if not (_apt_extract(pkg, ver, log) and cached.is_dir()):
            raise RuntimeError(f"could not fetch Debian package {pkg} ({ver}).\n" + "\n".join(log))
    got = stamp.read_text().strip() if stamp.is_file() else "unknown"
    if got != ver:
        print(f"warning: {pkg} {got} is not the pinned {ver}; figures may differ", file=sys.stderr)
    return cached


# --------------------------------------------------------------------------
# listing files

def collection_paths(kind: str) -> list[tuple[str, Path]]:
    """Sorted (name, path) candidates of ``kind`` before de-duplication."""
    d = _data_dir(kind)
    if d is None:
        raise FileNotFoundError(
            f"collection {kind!r} not installed (package {PACKAGES[kind][0]}); "
            "call ensure_installed() first")
    found: dict[str, Path] = {}
    if kind == "icons":
        for size in reversed(_ICON_SIZES):  # larger sizes override smaller ones
            for ctx in reversed(_ICON_CONTEXTS):  # earlier contexts win ties
                sub = d / size / ctx
                if not sub.is_dir():
                    continue
                for p in sorted(sub.glob("*.png")):
                    if p.is_symlink():  # aliases of another icon
                        continue
                    name = p.stem
                    if any(w in name.lower() for w in _SKIP_WORDS):
                        continue
                    found[name] = p
    elif kind == "illustrations":
        for cat in _ART_CATEGORIES:
            sub = d / cat
            if not sub.is_dir():
                continue
            for p in sorted(sub.iterdir()):
                if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.is_symlink():
                    found[f"{cat}/{p.stem}"] = p
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    return sorted(found.items())


# --------------------------------------------------------------------------
# similarity (numpy only)

def _gray_on_white(img: Image.Image, size: int) -> np.ndarray:
    rgba = img.convert("RGBA").resize((size, size), Image.BOX)
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    bg.alpha_composite(rgba)
    return np.asarray(bg.convert("L"), dtype=np.float32)


def _edge_agreement(gray128: np.ndarray, shift: int = 6, thr: float = 40.0) -> np.ndarray:
    """min over the pair of: share of i's edge pixels on j's edges, minus the
    same share when j is shifted by ``shift`` px (chance level for the shapes)."""
    n = len(gray128)
    gx = np.zeros_like(gray128)
    gy = np.zeros_like(gray128)
    gx[:, :, 1:-1] = gray128[:, :, 2:] - gray128[:, :, :-2]
    gy[:, 1:-1, :] = gray128[:, 2:, :] - gray128[:, :-2, :]
    edges = np.hypot(gx, gy) > thr
    ef = edges.reshape(n, -1).astype(np.float32)
    cnt = np.maximum(ef.sum(1), 1.0)[:, None]
    aligned = (ef @ ef.T) / cnt
    base = np.zeros_like(aligned)
    for dy, dx in ((shift, 0), (-shift, 0), (0, shift), (0, -shift)):
        sh = np.roll(np.roll(edges, dy, 1), dx, 2).reshape(n, -1).astype(np.float32)
        base += (ef @ sh.T) / cnt
    c = aligned - base / 4
    return np.minimum(c, c.T)


def _shift_corr(gray48: np.ndarray, r: int = 3) -> np.ndarray:
    """Best Pearson correlation of the (inverted) 48x48 grays over shifts of
    up to ``r`` px, symmetric."""
    n, s, _ = gray48.shape
    g = 255.0 - gray48

    def z(x: np.ndarray) -> np.ndarray:
        x = x - x.mean(1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)

    zi = z(g[:, r:s - r, r:s - r].reshape(n, -1))
    best = np.full((n, n), -1.0, dtype=np.float32)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            zj = z(g[:, r + dy:s - r + dy, r + dx:s - r + dx].reshape(n, -1))
            np.maximum(best, zi @ zj.T, out=best)
    return np.maximum(best, best.T)


def _auto_links(kind: str, imgs: list[Image.Image]) -> list[tuple[int, int]]:
    e_thr, c_thr = _AUTO_THRESHOLDS[kind]
    g128 = np.stack([_gray_on_white(im, 128) for im in imgs])
    g48 = np.stack([_gray_on_white(im, 48) for im in imgs])
    e = _edge_agreement(g128)
    c = _shift_corr(g48)
    hit = np.triu((e > e_thr) | (c > c_thr), 1)
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(hit))]


def _dedupe(names: list[str], paths: list[Path], imgs: list[Image.Image]) -> list[int]:
    """Indices to keep: first of each byte-identical or near-identical group."""
    keep: list[int] = []
    seen_hash: set[str] = set()
    thumbs: list[np.ndarray] = []
    for i, (p, im) in enumerate(zip(paths, imgs)):
        h = hashlib.sha1(p.read_bytes()).hexdigest()
        if h in seen_hash:
            continue
        t = np.asarray(im.convert("RGBA").resize((64, 64), Image.BOX), dtype=np.float32)
        # premultiply so that invisible pixels do not count
        t = np.concatenate([t[..., :3] * (t[..., 3:] / 255.0), t[..., 3:]], axis=-1)
        if any(np.abs(t - u).mean() < _DUP_MAD for u in thumbs):
            continue
        seen_hash.add(h)
        thumbs.append(t)
        keep.append(i)
    return keep


# --------------------------------------------------------------------------

def load_collection(kind: str, n: int | None = None, seed: int = 0,
                    ) -> list[tuple[str, Image.Image, str]]:
    """(name, image, family) for every distinct picture of ``kind``, sorted by name.

    Icons are RGBA, illustrations RGB.  Images sharing a family id are
    variants of one design ("related"); all other pairs are distinct
    pictures.  ``n``: a seeded random sample of that many (after
    de-duplication and grouping over the whole collection), still sorted.
    """
    if kind not in PACKAGES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    items = collection_paths(kind)
    d = _data_dir(kind)
    pinned = PACKAGES[kind][1]
    ver = _installed_version(kind, d) if d else None
    if ver is not None and ver != pinned:
        warnings.warn(f"{PACKAGES[kind][0]} {ver} differs from the pinned {pinned}: "
                      "the curated families were checked on the pinned version",
                      stacklevel=2)
    names = [nm for nm, _ in items]
    paths = [p for _, p in items]
    imgs: list[Image.Image] = []
    for p in paths:
        with Image.open(p) as im:
            im.load()
            if kind == "icons":
                imgs.append(im.convert("RGBA"))
            else:
                imgs.append(im.convert("RGB"))
    keep = _dedupe(names, paths, imgs)
    names = [names[i] for i in keep]
    imgs = [imgs[i] for i in keep]

    parent = list(range(len(names)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    index = {nm: i for i, nm in enumerate(names)}
    for fam in _CURATED[kind]:
        present = [index[m] for m in fam if m in index]
        for a in present[1:]:
            union(present[0], a)
    for a, b in _auto_links(kind, imgs):
        union(a, b)
    out = [(nm, im, names[find(i)]) for i, (nm, im) in enumerate(zip(names, imgs))]
    if n is not None and n < len(out):
        rng = random.Random(seed)
        out = sorted(rng.sample(out, n), key=lambda t: t[0])
    return out


if __name__ == "__main__":  # pragma: no cover - manual check
    import time

    for k in sys.argv[1:] or KINDS:
        ensure_installed(k)
        t0 = time.perf_counter()
        col = load_collection(k)
        fams: dict[str, list[str]] = {}
        for nm, _im, f in col:
            fams.setdefault(f, []).append(nm)
        multi = {f: m for f, m in fams.items() if len(m) > 1}
        print(f"{k}: {len(col)} images, {len(fams)} families "
              f"({len(multi)} with >1 member), {time.perf_counter() - t0:.1f}s")
        for f, m in sorted(multi.items()):
            print("   ", f, "<-", ", ".join(x for x in m if x != f))
