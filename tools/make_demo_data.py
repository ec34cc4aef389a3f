"""Write a tiny CLIP checkpoint and a generated EuroSAT-layout dataset for the demo run."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caspl.testing import make_eurosat, make_tiny_clip  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", help="folder to write data/ and tiny_clip.pt into")
    p.add_argument("--per-class", type=int, default=20, help="images per class")
    args = p.parse_args()
    data = os.path.join(args.out, "data")
    if not os.path.isdir(os.path.join(data, "eurosat")):
        make_eurosat(data, per_class=args.per_class)
    clip_path = os.path.join(args.out, "tiny_clip.pt")
    if not os.path.isfile(clip_path):
        make_tiny_clip(clip_path)
    print(f"demo data in {data}, tiny CLIP at {clip_path}")


if __name__ == "__main__":
    main()
