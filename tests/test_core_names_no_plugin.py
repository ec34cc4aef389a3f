"""The core names no plugin: no string in caspl/'s code (its docstrings may cite the reference
repositories) is a registered trainer's name, a trainer's own config section or root key, or a
flag that a plugin's command-line dialect adds."""
import argparse
import ast
import os
import re

from caspl import TRAINER_REGISTRY
from caspl.cli import build_parser
from caspl.registry import DIALECT_REGISTRY
from conftest import ROOT


def docstrings(tree):
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def core_strings():
    for folder, _, files in os.walk(os.path.join(ROOT, "caspl")):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            skip = docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                    yield os.path.relpath(path, ROOT), node.lineno, node.value


def plugin_names():
    """(trainer names, trainer config sections and root keys, flags the dialects add)."""
    trainers = dict(TRAINER_REGISTRY.items())
    keys = {f"TRAINER.{c.CONFIG_NAME}." for c in trainers.values() if getattr(c, "CONFIG_NAME", None)}
    keys |= {f"{section}.{key}" for c in trainers.values() for section, entries in getattr(c, "ROOT_CONFIG", {}).items()
             for key in entries}
    bare = argparse.ArgumentParser()
    for _, dialect in DIALECT_REGISTRY.items():
        dialect.add_arguments(bare)
    flags = {o for a in bare._actions for o in a.option_strings} - {"-h", "--help"}
    return set(trainers), keys, flags


def test_the_core_strings_name_no_trainer_key_or_dialect_flag():
    names, keys, flags = plugin_names()
    assert len(names) > 10 and keys and flags  # the plugins are loaded: the check below means something
    found = []
    for path, line, text in core_strings():
        tokens = set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", text)) | set(re.findall(r"--[a-z-]+", text))
        hits = tokens & (names | flags) | {t for t in tokens if t.startswith("CasPL_")} | {k for k in keys if k in text}
        if hits:
            found.append(f"{path}:{line} {sorted(hits)}")
    assert not found, "\n".join(found)
    # and train.py still takes the dialects' flags, from their plugins
    assert flags <= {o for a in build_parser()._actions for o in a.option_strings}
