from setuptools import find_packages, setup


OPEN_CLIP = "open_clip_torch>=3.0"


def requirements():
    with open("requirements.txt") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


setup(
    name="caspl",
    version="0.1.0",
    description="Cascade Prompt Learning (CasPL) and the prompt-learning methods it plugs into, on OpenAI CLIP",
    packages=find_packages(include=["caspl", "caspl.*"]),
    python_requires=">=3.9",
    install_requires=requirements(),
    package_data={"caspl.evaluation": ["published.json"]},
    # open_clip: teachers of any open_clip model for CasPL phase 1 (TRAINER.CASPL.TEACHER open_clip:...);
    # the tests exercise them, so the test extra has it too; ruff lints the tree (pyproject.toml)
    extras_require={"open_clip": [OPEN_CLIP], "test": ["pytest", "ruff", OPEN_CLIP]},
)
