from pathlib import Path

from setuptools import find_packages, setup


setup(
    name="hf_mtl",
    version="0.1.0",
    description="Multi-task learning with adapters on the Hugging Face stack: one frozen model, many tasks.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8") if Path(__file__).with_name("README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["hf_mtl", "hf_mtl.*"]),
    include_package_data=True,
    install_requires=[
        "torch>=2.4,<2.15",
        "transformers>=5.0,<6",
        "peft>=0.21,<0.30",
        "accelerate>=1.10,<2",
        "datasets>=4.0,<6",
        "safetensors>=0.5",
        "huggingface_hub>=1.0,<3",
        "tokenizers>=0.21",
        "numpy",
        "scipy",
        "scikit-learn",
        "seqeval>=1.2.2",
        "conllu>=5.0",
        "rouge-score>=0.1.2",  # ROUGE of generated texts (hf_mtl.generation_metrics)
        "sacrebleu>=2.3",  # BLEU and chrF of generated texts
    ],
    extras_require={
        # the benchmark smoke tests run the plots; CI runs ruff (pyproject.toml; pinned: new minors add rules)
        "test": ["pytest>=8", "pytest-timeout", "matplotlib", "psutil", "ruff>=0.17,<0.18"],
        "bench": ["matplotlib", "psutil"],
    },
    entry_points={"console_scripts": ["hf-mtl=hf_mtl.cli:main"]},
)
