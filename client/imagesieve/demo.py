"""``imagesieve demo``: the main job on the embedded default, end to end.

Starts a local server, embeds a real folder of photos through gRPC and
prints what a person can check: each photo's top ImageNet class (against the
true label when the file name carries one) and its nearest other photo.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from .cli import iter_image_paths
from .client import Client
from .local_server import LocalServer


def run(args) -> int:
    if args.folder:
        folder = Path(args.folder)
    else:
        from .samples import imagenet_photo_dir
        folder = imagenet_photo_dir()
    paths = iter_image_paths([str(folder)])
    if not args.folder:  # foolbox's folder also holds CIFAR/MNIST samples
        paths = [p for p in paths if p.name.startswith("imagenet_")]
    print(f"starting a local imagesieve server (model {args.model}) ...")
    with LocalServer(model=args.model) as srv, Client(srv.address) as client:
        info = client.model_info()
        print(f"server at {srv.address}: {info.name}, {info.dim}-d embeddings, "
              f"providers {', '.join(info.providers)}")
        print(f"embedding {len(paths)} photos from {folder} ...\n")
        res = client.embed(paths, top_k_classes=1)
    sims = res.vectors @ res.vectors.T          # tiny demo set: a 20x20 matrix is fine
    np.fill_diagonal(sims, -np.inf)
    correct = labelled = 0
    print(f"{'photo':24} {'predicted class':28} {'p':>5}  {'true':>4}  nearest other photo (cosine)")
    for i, key in enumerate(res.keys):
        name = Path(key).name
        if not res.ok[i]:
            print(f"{name:24} FAILED: {res.errors[0].message}")
            continue
        idx, cls, p = res.top_classes[i][0]
        m = re.fullmatch(r"imagenet_\d+_(\d+)\.\w+", name)
        mark = ""
        if m:
            labelled += 1
            correct += int(m.group(1)) == idx
            mark = "ok" if int(m.group(1)) == idx else f"#{m.group(1)}"
        j = int(np.argmax(sims[i]))
        print(f"{name:24} {cls[:28]:28} {p:5.2f}  {mark:>4}  {Path(res.keys[j]).name} ({sims[i, j]:.3f})")
    with open(args.out, "wb") as f:       # exactly this name (np.save(path) appends .npy)
        np.save(f, res.vectors)
    print()
    if labelled:
        print(f"top-1 through gRPC: {correct}/{labelled} photos correct")
    print(f"embeddings: {args.out} ({res.vectors.shape[0]} x {res.vectors.shape[1]}, unit L2 norm: "
          f"{np.allclose(np.linalg.norm(res.vectors[res.ok], axis=1), 1, atol=1e-5)})")
    print(f"server stopped cleanly: {srv.returncode == 0}")
    return 0 if srv.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(run(None))
