from setuptools import find_packages, setup


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
    extras_require={"test": ["pytest"]},
)
