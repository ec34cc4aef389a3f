"""The guides describe the code as it is: every repository path they name exists, every link
between them resolves (file and anchor), and no link leaves the repository."""
import os
import re

import pytest

from conftest import ROOT

DOCS = os.path.join(ROOT, "docs")
GUIDES = ["README.md", "CONTRIBUTING.md"] + sorted(os.path.join("docs", f) for f in os.listdir(DOCS)
                                                   if f.endswith(".md"))
TOP = tuple(sorted(e for e in os.listdir(ROOT) if not e.startswith(".") and e not in ("caspl.egg-info",))) + (".ci",)


def text(guide):
    with open(os.path.join(ROOT, guide), encoding="utf-8") as f:
        return f.read()


def anchors(markdown):
    """GitHub's heading anchors: lower-cased, punctuation but '-' and '_' dropped, spaces to '-'."""
    heads = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("guide", GUIDES)
def test_every_repository_path_a_guide_names_exists(guide):
    spans = re.findall(r"`([^`\s]+)`", text(guide))
    paths = [s.rstrip("/.,:;") for s in spans if s.split("/")[0] in TOP and not re.search(r"[<>*{}$]", s)]
    assert paths, guide
    missing = [p for p in paths if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, f"{guide} names paths that do not exist: {missing}"


@pytest.mark.parametrize("guide", GUIDES)
def test_every_link_between_the_guides_resolves(guide):
    for target in re.findall(r"\]\(([^)\s]+)\)", text(guide)):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(os.path.dirname(guide), path)) if path else guide
        assert not file.startswith(".."), f"{guide}: {target} points outside the repository"
        assert os.path.exists(os.path.join(ROOT, file)), f"{guide}: {target}"
        if anchor and file.endswith(".md"):
            assert anchor in anchors(text(file)), f"{guide}: {target} (no such heading)"
