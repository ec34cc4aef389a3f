"""CLIP's BPE tokenizer (the instance openai-clip builds on import), as plain id lists."""
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from clip.clip import _tokenizer

SOT = _tokenizer.encoder["<|startoftext|>"]
EOT = _tokenizer.encoder["<|endoftext|>"]


def encode(text):
    return _tokenizer.encode(text)


def decode(ids):
    return _tokenizer.decode(ids)
