"""A minimal application that embeds zoo.runtime (no torch, no other zoo module): it classifies every image
in a folder, in process.

    python examples/embed_app.py BUNDLE FOLDER [--top-k 3] [--threads N]

To put a model behind an HTTP endpoint instead, use `zoo serve BUNDLE` (the Open Inference Protocol,
batching, metrics; README, "Serving").
"""

import argparse
import sys
from pathlib import Path

import zoo.runtime

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def classify_folder(session, folder: Path, top_k: int) -> int:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        print(f"no images in {folder}", file=sys.stderr)
        return 1
    for path, result in zip(files, session.classify([str(p) for p in files], top_k=top_k)):
        print(path.name + "\t" + "\t".join(f"{label} {p:.3f}" for pairs in result.values() for label, p in pairs))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Classify a folder of images with an exported zoo bundle.")
    parser.add_argument("bundle")
    parser.add_argument("folder")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    try:
        session = zoo.runtime.load(args.bundle, threads=args.threads)
    except (zoo.runtime.BundleError, zoo.runtime.DeviceUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pre = session.manifest.preprocess.get(session.input_names[0])
    if len(session.input_names) != 1 or getattr(pre, "kind", None) != "image" or not session.manifest.is_classifier:
        print(f"error: {session.manifest.model} is not a single-input image classifier", file=sys.stderr)
        return 2
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"error: {folder} is not a folder of images", file=sys.stderr)
        return 2
    return classify_folder(session, folder, args.top_k)


if __name__ == "__main__":
    sys.exit(main())
