"""Prompt interpretation (CoOp, section 4.4): the words nearest to each learned text context
vector, by Euclidean distance in CLIP's token-embedding space.

    python tools/interpret_prompt.py output/.../prompt_learner/model.pth.tar-50 [--topk 5]

The backbone is the one the checkpoint records (--backbone for another path to it). Every
learnable tensor whose last dimension is the text width is read as context vectors (CoOp's
shared or per-class context, the first-layer text prompts of IVLP, MaPLe, PromptSRC; --key
picks one); each row is printed with its nearest words."""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caspl import CasplError  # noqa: E402
from caspl.clip import load_clip  # noqa: E402
from caspl.clip.tokenizer import decode  # noqa: E402
from caspl.engine import read_checkpoint  # noqa: E402


def text_contexts(state_dict, width, key=None):
    """{name: (rows, width) tensor} of the checkpoint's text context vectors."""
    if key is not None:
        if key not in state_dict:
            raise CasplError(f"no tensor {key!r} in the checkpoint (it holds: {', '.join(sorted(state_dict))})")
        return {key: state_dict[key].float().reshape(-1, width)}
    found = {k: v.float().reshape(-1, width) for k, v in state_dict.items()
             if v.dim() >= 2 and v.shape[-1] == width and "vis" not in k.lower() and "meta_net" not in k}
    if not found:
        raise CasplError(f"no text context of width {width} in the checkpoint "
                         f"(it holds: {', '.join(sorted(state_dict))})")
    return found


def nearest_words(vectors, token_embedding, topk):
    """[[(word, distance), ...] per vector]: the topk vocabulary entries nearest to each vector."""
    dist = torch.cdist(vectors, token_embedding.float(), compute_mode="donot_use_mm_for_euclid_dist")  # exact
    values, ids = dist.topk(topk, dim=1, largest=False)
    return [[(decode([int(i)]).strip(), float(d)) for d, i in zip(vs, ix)] for vs, ix in zip(values, ids)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a model.pth.tar-N file written by a prompt learner")
    ap.add_argument("--backbone", help="the CLIP name or file (default: the one the checkpoint records)")
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--key", help="read only this tensor of the checkpoint")
    args = ap.parse_args(argv)
    try:
        ckpt = read_checkpoint(args.checkpoint)
        backbone = args.backbone or ckpt.get("meta", {}).get("backbone")
        if not backbone:
            raise CasplError("the checkpoint records no backbone: name it with --backbone")
        embedding = load_clip(backbone).token_embedding.weight.detach()
        contexts = text_contexts(ckpt["state_dict"], embedding.shape[1], args.key)
    except CasplError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint} (backbone {backbone}): nearest words, Euclidean distance")
    for name, vectors in contexts.items():
        print(f"{name}: {vectors.shape[0]} vectors")
        for i, words in enumerate(nearest_words(vectors, embedding, args.topk), start=1):
            print(f"  {i:>3}: " + ", ".join(f"{w} ({d:.4f})" for w, d in words))
    return 0


if __name__ == "__main__":
    sys.exit(main())
