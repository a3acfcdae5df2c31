"""``imagesieve``: the command line.

    imagesieve serve [--address HOST:PORT] [--port N]   run the gRPC server (needs imagesieve-server)
    imagesieve embed PATHS... --server ADDR --out FILE.npy
    imagesieve check PATHS... --collection C [--add-if-unique]   verdict per image
    imagesieve add PATHS|MANIFEST.csv --collection C [--folder-labels]   images with labels and splits
    imagesieve dedup --collection C --out DIR      pairs, groups, leakage + contact sheet
    imagesieve info --server ADDR                  the server's model
    imagesieve health --server ADDR                gRPC health check (exit 0 when SERVING)
    imagesieve demo                                 start a server, embed real sample photos
    imagesieve audit SOURCE --out DIR               full dataset audit with an HTML report (resumable)
    imagesieve calibrate PATHS...                   near-duplicate threshold for your images
    imagesieve labels SOURCE --top 1%               likely mislabeled images + contact sheet
    imagesieve samplesize SOURCE --target 0.95      images needed for a target accuracy + plot
    imagesieve consensus MANIFEST.csv --out DIR     several annotators: consensus, reliability, review queue
    imagesieve fix fixes.csv --out manifest.csv     apply a report's fix list: the cleaned manifest
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from .manifest import SPLIT_NAMES, read_csv_rows, spreadsheet_cell
from .walk import files_under

# The suffixes of the formats the server decodes (imagesieve_server.formats,
# kept equal by a test; the light client does not import the server).
IMAGE_SUFFIXES = frozenset({
    ".apng", ".avif", ".avifs", ".bmp", ".bw", ".dds", ".dib", ".gif", ".icb", ".ico", ".j2c", ".j2k", ".jfif",
    ".jp2", ".jpc", ".jpe", ".jpeg", ".jpf", ".jpg", ".jpx", ".pbm", ".pcx", ".pfm", ".pgm", ".png", ".pnm",
    ".ppm", ".psd", ".qoi", ".rgb", ".rgba", ".sgi", ".svg", ".svgz", ".tga", ".tif", ".tiff", ".vda", ".vst",
    ".webp"})
# Image formats a folder may hold that the server does not decode: counted and named, not dropped silently.
UNREAD_IMAGE_SUFFIXES = frozenset({
    ".arw", ".blp", ".cr2", ".cr3", ".cur", ".dcx", ".dng", ".emf", ".eps", ".exr", ".fit", ".fits", ".flc", ".fli",
    ".ftc", ".ftu", ".gbr", ".gih", ".hdr", ".heic", ".heif", ".icns", ".iim", ".im", ".jxl", ".jxr", ".kra", ".msp",
    ".nef", ".ora", ".orf", ".pat", ".pcd", ".ps", ".psb", ".pxr", ".raf", ".ras", ".rw2", ".wmf", ".xbm", ".xcf",
    ".xpm"})


class MissingPath(ValueError):
    """A path given on the command line that does not exist."""


def iter_image_paths(paths: list[str]) -> list[Path]:
    """Files as given, folders walked recursively for image suffixes (sorted).
    Hidden files, files in formats the server does not decode and names that
    are not valid UTF-8 are left out, each kind counted in a note on stderr.
    Raises MissingPath naming every given path that does not exist (a typo
    must not pass for an empty or failed run)."""
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise MissingPath("no such file or folder: " + ", ".join(missing))
    out: list[Path] = []
    skipped: Counter = Counter()
    unwalked: list[tuple[str, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            # Hidden files (thumbnail caches, macOS "._" metadata) are left out, as the server's listings do.
            found = []
            for f, regular in files_under(p, unwalked):     # linked folders too; one stat an entry
                if regular:
                    found.append(f)
                elif f.suffix.lower() in IMAGE_SUFFIXES and not _hidden(f, p):
                    # A pipe, a device or a link to nothing under an image's name: never opened, but said.
                    skipped["not regular"] += 1
            images = [f for f in found if f.suffix.lower() in IMAGE_SUFFIXES]
            shown = [f for f in images if not _hidden(f, p)]
            skipped["hidden"] += len(images) - len(shown)
            out.extend(sorted(shown))
            skipped.update(f.suffix.lower() for f in found
                           if f.suffix.lower() in UNREAD_IMAGE_SUFFIXES and not _hidden(f, p))
        else:
            out.append(p)
    if unwalked:
        print(f"note: {len(unwalked)} folder(s) could not be opened, their images left out (first: "
              f"{unwalked[0][0]}: {unwalked[0][1]})", file=sys.stderr)
    hidden = skipped.pop("hidden", 0)
    irregular = skipped.pop("not regular", 0)
    if irregular:
        print(f"note: {irregular} image name(s) left out: not regular files (a pipe, a device or a link to "
              "nothing)", file=sys.stderr)
    if hidden:
        print(f"note: {hidden} hidden image file(s) left out (a name starting with '.', or under __MACOSX); "
              "name them to include them", file=sys.stderr)
    if skipped:
        n = sum(skipped.values())
        print(f"note: {n} file{'s' if n != 1 else ''} left out: image formats imagesieve does not decode "
              f"({', '.join(f'{k}: {v}' for k, v in skipped.most_common())}); convert them (e.g. to PNG) "
              "to include them", file=sys.stderr)
    # A file named twice (given itself and inside a folder given, or under two spellings of
    # one path) is one image: embedded twice, its key came twice. Links are not followed:
    # two names of one file in a data set are two entries (a label conflict, say).
    first: dict[str, Path] = {}
    for p in out:
        first.setdefault(os.path.abspath(p), p)
    once = list(first.values())
    if len(once) < len(out):
        print(f"note: {len(out) - len(once)} image file(s) named more than once (a file given and also in a "
              "folder given): each taken once", file=sys.stderr)
    out = once
    named = [p for p in out if _utf8(p)]
    if len(named) < len(out):
        # Keys travel as protobuf strings, which must be valid UTF-8.
        print(f"note: {len(out) - len(named)} image file(s) left out: names that are not valid UTF-8; rename "
              "them (e.g. with convmv) to include them", file=sys.stderr)
    return named


def counted(n: int, noun: str) -> str:
    """"1 group", "3 groups": a count as a person reads it."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts)


def _utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _add_security_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", default=None,
                   help="bearer token for a server that requires one (env IMAGESIEVE_TOKEN; "
                        "prefer the env: flags show in process lists)")
    p.add_argument("--tls-ca", default=os.environ.get("IMAGESIEVE_TLS_CA"),
                   help="CA certificate (PEM) of a TLS server; makes the connection TLS (env IMAGESIEVE_TLS_CA)")
    p.add_argument("--tls-cert", default=os.environ.get("IMAGESIEVE_CLIENT_TLS_CERT"),
                   help="client certificate (PEM) for mutual TLS (env IMAGESIEVE_CLIENT_TLS_CERT)")
    p.add_argument("--tls-key", default=os.environ.get("IMAGESIEVE_CLIENT_TLS_KEY"),
                   help="client key (PEM) for mutual TLS (env IMAGESIEVE_CLIENT_TLS_KEY)")


def server_address(text: str) -> str:
    """argparse type for --server: a gRPC target, host:port (or a gRPC
    scheme such as unix:/path). A URL or a host without a port is refused
    here, in one line, rather than dialled (a bare host dials port 443)."""
    t = text.strip()
    if t.startswith(("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")):
        return t
    if "://" in t:
        raise argparse.ArgumentTypeError(f"{text!r} is a URL; a gRPC server is addressed as host:port, "
                                         "e.g. 127.0.0.1:50051")
    host, sep, port = t.rpartition(":")
    if not sep or not host or not port.isdigit() or (":" in host and not host.startswith("[")):
        raise argparse.ArgumentTypeError(f"{text!r} has no port; give host:port, e.g. {t or '127.0.0.1'}:50051")
    return t


def _add_server_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--server", type=server_address, default=default,
                   help="the server, host:port (default %(default)s; env IMAGESIEVE_SERVER)")


def _add_connect_timeout(p: argparse.ArgumentParser, seconds: float) -> None:
    p.add_argument("--connect-timeout", type=float, default=seconds,
                   help="seconds to wait for the server to accept the connection (default %(default)s); "
                        "a refused connection fails at once")


def _security_kw(args) -> dict:
    token = getattr(args, "token", None) or os.environ.get("IMAGESIEVE_TOKEN") or None
    return dict(token=token, tls_ca=getattr(args, "tls_ca", None) or None,
                tls_cert=getattr(args, "tls_cert", None) or None, tls_key=getattr(args, "tls_key", None) or None)


def cmd_embed(args) -> int:
    import numpy as np
    from .client import Client
    from .contact_sheet import one_line
    from .progress import Progress

    paths = iter_image_paths(args.paths)
    # NAME.keys.txt holds a key a line: a name that breaks a line would shift every later key.
    lines = [p for p in paths if len(f"{p}x".splitlines()) == 1]
    if len(lines) < len(paths):
        print(f"note: {len(paths) - len(lines)} image file(s) left out: names with a line break, which "
              "the keys file (a key a line) cannot hold; rename them to include them", file=sys.stderr)
        paths = lines
    if not paths:
        print("imagesieve embed: no images found", file=sys.stderr)
        return 2
    with Client(args.server, **_security_kw(args)) as client:
        client.wait_ready(args.connect_timeout, fail_fast=True)
        vectors = np.zeros((len(paths), client.dim), dtype=np.float32)
        failures = []
        with Progress(len(paths), "embedding") as bar:
            for r in client.embed_stream(paths, chunk_size=args.chunk_size):
                if r.ok:
                    vectors[r.index] = r.vector
                else:
                    failures.append(r.error)
                bar.update(ok=r.ok)
    out = Path(args.out)
    with open(out, "wb") as f:            # exactly this name (np.save(path) appends .npy)
        np.save(f, vectors)
    keys_path = out.with_suffix(".keys.txt")
    keys_path.write_text("".join(f"{p}\n" for p in paths))
    for f in failures:
        print(f"failed: {one_line(f.key)}: {f.code}: {f.message}", file=sys.stderr)
    print(f"wrote {out} ({len(paths)} x {vectors.shape[1]} float32, unit rows; zero rows = failed) "
          f"and {keys_path}; {len(paths) - len(failures)} embedded, {len(failures)} failed")
    return 1 if failures and args.strict else 0


def _neighbor(n) -> str:
    """A neighbour of a checked image as its line shows it: key, cosine, and stage 2's agreement."""
    from .contact_sheet import one_line
    return (f"{one_line(n.key)} (cosine {n.cosine:.3f}"
            + (f", layout agreement {n.agreement:.3f}" if n.agreement == n.agreement else "") + ")")


def _collection_call_failed(e, create: bool) -> str:
    """A failed call of a command that takes --create, in one line; a
    collection that does not exist says how to make it."""
    import grpc
    hint = (" (--create makes it)" if e.code() == grpc.StatusCode.NOT_FOUND and not create
            and "collection" in (e.details() or "") else "")
    return f"{e.code().name}: {e.details()}{hint}"


def cmd_check(args) -> int:
    """Stream images through CheckDuplicates; one verdict line per image."""
    from .contact_sheet import one_line
    import grpc
    from .client import Client
    from .plausible import implausible
    from .progress import Progress

    paths = iter_image_paths(args.paths)
    if not paths:
        print("imagesieve check: no images found", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    failed = 0
    with Client(args.server, **_security_kw(args)) as client:
        client.wait_ready(args.connect_timeout, fail_fast=True)
        try:
            if args.create:
                client.create_collection(args.collection, exist_ok=True)
            with Progress(len(paths), "checking") as bar:
                for r in client.check(args.collection, paths, k=args.k or 5, threshold=args.threshold,
                                      add_if_unique=args.add_if_unique, raw_cosine=args.raw_cosine):
                    counts[r.verdict] = counts.get(r.verdict, 0) + 1
                    bar.update(ok=r.error is None)
                    if r.error:
                        detail = f"{r.error.code}: {r.error.message}"
                    elif r.neighbors:
                        first = r.neighbors[0]
                        detail = f"{'same picture as' if first.verified else 'nearest'} {_neighbor(first)}"
                    else:
                        detail = "collection empty"
                    added = " [added]" if r.added else ""
                    failed += r.error is not None
                    print(f"{r.verdict:15} {one_line(r.key)}  {detail}{added}", flush=True)
                    # -k given: the next neighbours too, one indented line each
                    for n in (r.neighbors[1:args.k] if args.k and r.error is None else ()):
                        print(f"{'':15}   then {'the same picture ' if n.verified else ''}{_neighbor(n)}", flush=True)
        except grpc.RpcError as e:
            print(f"imagesieve check: {_collection_call_failed(e, args.create)}", file=sys.stderr)
            return 1
    print("summary: " + ", ".join(f"{v.lower()} {n}" for v, n in sorted(counts.items())), file=sys.stderr)
    near, checked = counts.get("NEAR_DUPLICATE", 0), sum(counts.values()) - failed
    if implausible(near, checked):
        # An ingestion gate that turns many images away must say so: pictures of
        # one template (cards of one deck, forms) can pass verification.
        print(f"warning: {near} of {checked} images ({near / checked:.0%}) were judged near duplicates of "
              "images in the collection, an implausible share unless these images are known to hold many "
              "copies: check a sample of the pairs above"
              + (" (those images were not added)" if args.add_if_unique else ""), file=sys.stderr)
    return 1 if failed and args.strict else 0


def folder_label_and_split(folders: list[str]) -> tuple[str, str]:
    """(label, split) from an image's folders, nearest first: the split is
    the nearest train/val/test folder, the label the nearest other one
    (``cat/train/x.png`` and ``train/cat/x.png`` both give cat, train)."""
    split = next((f.lower() for f in folders if f.lower() in SPLIT_NAMES), "")
    label = next((f for f in folders if f.lower() not in SPLIT_NAMES), "")
    return label, split


def _manifest_rows(manifest: Path) -> list[tuple[Path, str, str]]:
    """(path, label, split) rows of a CSV manifest (``manifest.read_csv_rows``:
    columns path[,label][,split], named in any case and with spaces around
    them), relative paths from the manifest's folder; splits in lower case."""
    rows = read_csv_rows(manifest)
    if rows and "path" not in rows[0]:
        raise ValueError(f"{manifest}: a manifest needs a 'path' column (and optional label, split); "
                         f"its columns are {sorted(rows[0])}")
    out = []
    for line, row in enumerate(rows, start=2):
        if not any(v.strip() for v in row.values()):
            continue
        path = row.get("path", "").strip()
        if not path:
            raise ValueError(f"{manifest}:{line}: no path")
        p = Path(path)
        out.append((p if p.is_absolute() else manifest.parent / p, row.get("label", "").strip(),
                    row.get("split", "").strip().lower()))
    return out


def labelled_inputs(args) -> list[tuple[Path, str, str]]:
    """(path, label, split) of every image ``add`` sends: a .csv SOURCE is a
    manifest (:func:`_manifest_rows`); files and folders are walked, and
    with ``--folder-labels`` label and split come from the folders an image
    lies in (:func:`folder_label_and_split`; within a folder given, up to
    and including that folder's own name; for a file given, its parent and
    grandparent). ``--label`` / ``--split`` fill what is still empty."""
    out: list[tuple[Path, str, str]] = []
    for source in args.paths:
        if source.lower().endswith(".csv"):
            m = Path(source)
            if not m.is_file():
                raise MissingPath(f"no such file or folder: {source}")
            out.extend(_manifest_rows(m))
            continue
        root = Path(source)
        for p in iter_image_paths([source]):
            label = split = ""
            if args.folder_labels:
                if root.is_dir():
                    folders = [*reversed(p.relative_to(root).parts[:-1]), root.resolve().name]
                else:
                    folders = [p.resolve().parent.name, p.resolve().parent.parent.name]
                label, split = folder_label_and_split(folders)
            out.append((p, label, split))
    return [(p, label or args.label, split or args.split.lower()) for p, label, split in out]


def cmd_add(args) -> int:
    """AddImages: images into a collection with their label and split, so
    that dedup can tell leakage and label conflicts."""
    from .contact_sheet import one_line
    import grpc
    from .client import Client
    from .progress import Progress

    try:
        items = labelled_inputs(args)
    except ValueError as e:
        if isinstance(e, MissingPath):
            raise
        print(f"imagesieve add: {e}", file=sys.stderr)
        return 2
    if not items:
        print("imagesieve add: no images found", file=sys.stderr)
        return 2
    added = exact = 0
    failures = []
    with Client(args.server, **_security_kw(args)) as client:
        client.wait_ready(args.connect_timeout, fail_fast=True)
        try:
            if args.create:
                client.create_collection(args.collection, exist_ok=True)
            with Progress(len(items), "adding") as bar:
                for r in client.add(args.collection, [p for p, _, _ in items], labels=[x[1] for x in items],
                                    splits=[x[2] for x in items], skip_exact_duplicates=args.skip_exact_duplicates):
                    added += r.added
                    exact += bool(r.exact_duplicate_of) and not r.added
                    if r.error:
                        failures.append(r.error)
                    bar.update(ok=r.error is None)
        except grpc.RpcError as e:
            print(f"imagesieve add: {_collection_call_failed(e, args.create)}", file=sys.stderr)
            return 1
    for f in failures:
        print(f"failed: {one_line(f.key)}: {f.code}: {f.message}", file=sys.stderr)
    labelled = sum(bool(x[1]) for x in items)
    print(f"{args.collection}: {added} added ({labelled} of {len(items)} labelled), {exact} skipped as exact "
          f"duplicates, {len(failures)} failed")
    return 1 if failures and args.strict else 0


def cmd_dedup(args) -> int:
    """FindDuplicates on a collection: JSON and CSV for machines, a contact
    sheet of the groups for people."""
    import csv
    import grpc
    from google.protobuf.json_format import MessageToDict
    from .client import Client
    from .contact_sheet import SheetItem, save_contact_sheet

    from .progress import StageProgress

    out = Path(args.out)
    with Client(args.server, **_security_kw(args)) as client:
        client.wait_ready(args.connect_timeout, fail_fast=True)
        try:
            # The server's stages, one progress line each (a bar on a terminal, plain lines in a log).
            with StageProgress() as stages:
                res = client.find_duplicates(args.collection, threshold=args.threshold,
                                             approximate=args.approximate, grouping=args.grouping,
                                             raw_cosine=args.raw_cosine,
                                             progress=lambda p: stages(p.stage, p.done, p.total))
        except grpc.RpcError as e:
            print(f"imagesieve dedup: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    out.mkdir(parents=True, exist_ok=True)       # only once there is something to write
    doc = MessageToDict(res, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    doc["collection"] = args.collection
    doc["num_images"] = res.num_images          # int64 is a string in proto JSON
    (out / "duplicates.json").write_text(json.dumps(doc, indent=2))
    with open(out / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key_a", "key_b", "cosine", "exact", "cross_split", "labels_disagree", "agreement",
                    "matched_area", "mirrored", "turned_degrees", "inverted", "keypoint_inliers", "matched_blur_px"])
        for p in res.pairs:
            w.writerow([spreadsheet_cell(p.key_a), spreadsheet_cell(p.key_b), f"{p.cosine:.4f}", p.exact, p.cross_split, p.labels_disagree,
                        f"{p.agreement:.4f}", f"{p.matched_area:.3f}", p.mirrored,
                        p.turned_degrees, p.inverted, p.keypoint_inliers, f"{p.matched_blur_px:.2f}"])
    items = []
    for gi, g in enumerate(sorted(res.groups, key=lambda g: -len(g.keys))[: args.max_groups]):
        for key in g.keys:
            image = key if Path(key).is_file() else None
            items.append(SheetItem(image if image else b"", [f"group {gi + 1} (min {g.min_internal_cosine:.2f})",
                                                            Path(key).name]))
    if items:
        save_contact_sheet(items, out / "duplicate_groups.png", columns=args.columns,
                           title=f"{args.collection}: {counted(len(res.groups), 'duplicate group')} ({res.method})")
    exact = sum(p.exact for p in res.pairs)
    grouped = {key for g in res.groups for key in g.keys}
    outside = len({key for p in res.pairs for key in (p.key_a, p.key_b)} - grouped)
    print(f"{counted(res.num_images, 'image')}: {counted(len(res.pairs), 'duplicate pair')} ({exact} exact, "
          f"{len(res.pairs) - exact} near) in {counted(len(res.groups), 'group')}"
          + (f" (and {counted(outside, 'more image')} paired but in no group: every two images of a group are paired, "
             "these pair with members of a group they cannot join; pairs.csv lists them)" if outside else "")
          + "; "
          f"{counted(sum(p.cross_split for p in res.pairs), 'pair')} across splits (leakage), "
          f"{counted(sum(p.labels_disagree for p in res.pairs), 'pair')} with different labels")
    print(f"method: {res.method}; threshold {res.threshold_reason}")
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {out / 'duplicates.json'}, {out / 'pairs.csv'}"
          + (f", {out / 'duplicate_groups.png'}" if items else ""))
    return 0


def cmd_info(args) -> int:
    import grpc
    from google.protobuf.json_format import MessageToDict
    from .client import Client

    with Client(args.server, timeout=args.connect_timeout, **_security_kw(args)) as client:
        # A server that cannot be reached is main()'s one line and exit code 2, as for every command.
        client.wait_ready(args.connect_timeout, fail_fast=True)
        try:
            print(json.dumps(MessageToDict(client.model_info()), indent=2))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise
            print(f"imagesieve info: {args.server} answered {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


def cmd_health(args) -> int:
    """Standard gRPC health check (for Docker HEALTHCHECK and probes)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from .channel import make_channel
    kw = _security_kw(args)
    kw.pop("token", None)       # the health check is open; no token needed
    with make_channel(args.server, **kw) as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.connect_timeout).status
        except grpc.RpcError as e:
            print(f"{args.server}: {e.code().name}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(name)
    return 0 if name == "SERVING" else 1


NEEDS_SERVER = "needs the server: pip install imagesieve-server (from a checkout: pip install ./client .)"


def cmd_serve(argv: list[str]) -> int:
    try:
        from imagesieve_server.server import main as serve_main
    except ImportError as e:
        print(f"imagesieve serve {NEEDS_SERVER} ({e})", file=sys.stderr)
        return 2
    return serve_main(argv)


# Subcommands that run analyses in-process: they live with the server
# (imagesieve_server.commands.NAME: add_arguments, run) and need that distribution (imagesieve-server).
SERVER_COMMANDS = {
    "audit": "the whole quality picture of a dataset: duplicates, leakage, outliers, labels, quantity",
    "labels": "rank likely mislabeled images (labelfix and out-of-fold scoring)",
    "samplesize": "how many images reach a target accuracy (learning-curve sweep)",
    "calibrate": "choose the near-duplicate threshold from altered copies of your images",
    "consensus": "consensus of several annotators per image, reliability, review queue, ambiguous classes",
    "fix": "apply a report's fix list: write the cleaned manifest (never touches your files)",
}


def _add_server_commands(sub, chosen: str | None) -> None:
    """Every server command is listed; only the ``chosen`` one is imported
    (its module pulls in the analyses: ONNX Runtime, FAISS, OpenCV), so
    ``imagesieve health`` (a Docker HEALTHCHECK) stays light."""
    import importlib
    for name, help_text in SERVER_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name != chosen:
            continue
        try:
            mod = importlib.import_module(f"imagesieve_server.commands.{name}")
        except ImportError as e:
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=lambda a, e=e, n=name: _needs_server(n, e))
            continue
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)


def _needs_server(name: str, error: ImportError) -> int:
    print(f"imagesieve {name} {NEEDS_SERVER} ({error})", file=sys.stderr)
    return 2


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("imagesieve")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """--version, reading the installed version only when asked
    (importlib.metadata costs ~15 ms at every start)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"imagesieve {_version()}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":          # the server parses its own flags
        return cmd_serve(argv[1:])
    ap = argparse.ArgumentParser(prog="imagesieve", description="Keep image datasets clean.")
    ap.add_argument("--version", action=_VersionAction, help="show the version and exit")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gRPC server (see imagesieve serve --help)")
    default_server = os.environ.get("IMAGESIEVE_SERVER", "127.0.0.1:50051")

    e = sub.add_parser("embed", help="embed images through a server into a .npy file")
    e.add_argument("paths", nargs="+", help="image files or folders (walked recursively)")
    _add_server_option(e, default_server)
    e.add_argument("--out", required=True,
                   help="output .npy; keys go beside it, one a line, in NAME.keys.txt (emb.npy: emb.keys.txt)")
    e.add_argument("--chunk-size", type=int, default=16, help="images per stream message")
    _add_connect_timeout(e, 30.0)
    e.add_argument("--strict", action="store_true", help="exit 1 if any image failed")
    _add_security_options(e)
    e.set_defaults(func=cmd_embed)

    c = sub.add_parser("check", help="check images against a collection before ingestion")
    c.add_argument("paths", nargs="+", help="image files or folders")
    c.add_argument("--collection", required=True, help="the collection to check against (and add to)")
    _add_server_option(c, default_server)
    c.add_argument("-k", type=int, default=None,
                   help="neighbours to show per image, one line each (default: the nearest, on the verdict's line)")
    c.add_argument("--threshold", type=float, default=0.0,
                   help="near-duplicate cosine with --raw-cosine (0 = collection default); else the candidates' floor")
    c.add_argument("--raw-cosine", action="store_true",
                   help="verdicts by embedding cosine alone (no stage-2 verification of each candidate)")
    c.add_argument("--add-if-unique", action="store_true", help="add each unique image, atomically")
    c.add_argument("--create", action="store_true", help="create the collection if it does not exist")
    c.add_argument("--strict", action="store_true", help="exit 1 if any image failed")
    _add_connect_timeout(c, 30.0)
    _add_security_options(c)
    c.set_defaults(func=cmd_check)

    a = sub.add_parser("add", help="add images to a collection, with labels and splits")
    a.add_argument("paths", nargs="+",
                   help="image files, folders (walked recursively) or CSV manifests (path[,label][,split])")
    a.add_argument("--collection", required=True, help="the collection to add to")
    _add_server_option(a, default_server)
    a.add_argument("--folder-labels", action="store_true",
                   help="label = the nearest folder above an image that is not train/val/test (a folder "
                        "given counts); split = the nearest train/val/test folder")
    a.add_argument("--label", default="", help="label for images that get none otherwise")
    a.add_argument("--split", default="", help="split (e.g. train, test) for images that get none otherwise")
    a.add_argument("--skip-exact-duplicates", action="store_true",
                   help="do not add a byte-identical copy of a stored image")
    a.add_argument("--create", action="store_true", help="create the collection if it does not exist")
    a.add_argument("--strict", action="store_true", help="exit 1 if any image failed")
    _add_connect_timeout(a, 30.0)
    _add_security_options(a)
    a.set_defaults(func=cmd_add)

    dd = sub.add_parser("dedup", help="all duplicate pairs and groups of a collection")
    dd.add_argument("--collection", required=True, help="the collection to search")
    dd.add_argument("--out", required=True, help="folder for duplicates.json, pairs.csv, duplicate_groups.png")
    _add_server_option(dd, default_server)
    dd.add_argument("--threshold", type=float, default=0.0,
                    help="cosine with --raw-cosine (0 = from the data); else the candidates' floor (0 = 0.5)")
    dd.add_argument("--raw-cosine", action="store_true",
                    help="pairs by embedding cosine alone (no stage-2 verification of each pair)")
    dd.add_argument("--approximate", action="store_true", help="kNN graph instead of exact range search")
    dd.add_argument("--grouping", choices=["bounded", "centre", "components"], default="bounded")
    dd.add_argument("--max-groups", type=int, default=60, help="groups drawn on the contact sheet")
    dd.add_argument("--columns", type=int, default=6)
    _add_connect_timeout(dd, 30.0)
    _add_security_options(dd)
    dd.set_defaults(func=cmd_dedup)

    i = sub.add_parser("info", help="show the server's model")
    _add_server_option(i, default_server)
    _add_connect_timeout(i, 10.0)
    _add_security_options(i)
    i.set_defaults(func=cmd_info)

    h = sub.add_parser("health", help="gRPC health check of a server (exit 0 when SERVING)")
    _add_server_option(h, default_server)
    h.add_argument("--service", default="", help="service name ('' = the whole server)")
    _add_connect_timeout(h, 5.0)
    _add_security_options(h)
    h.set_defaults(func=cmd_health)

    d = sub.add_parser("demo", help="start a local server and embed real sample photos")
    d.add_argument("folder", nargs="?", help="image folder (default: the 20 ImageNet photos foolbox ships)")
    d.add_argument("--model", default="mobilenet_v1")
    d.add_argument("--out", default="demo_embeddings.npy")
    d.set_defaults(func=lambda a: __import__("imagesieve.demo", fromlist=["run"]).run(a))

    _add_server_commands(sub, next((a for a in argv if not a.startswith('-')), None))
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except MissingPath as e:
        print(f"imagesieve {args.command}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - only a dead server is answered here; the rest re-raises
        import grpc
        unavailable = isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE
        if not (isinstance(e, grpc.FutureTimeoutError) or unavailable):
            raise
        # One line, not a traceback: the commonest mistake is a server that
        # is not running or a wrong --server.
        detail = e.details() if unavailable else str(e)
        print(f"imagesieve {args.command}: cannot reach the server at {getattr(args, 'server', '?')} "
              f"({detail}); is it running? (--server, env IMAGESIEVE_SERVER)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
