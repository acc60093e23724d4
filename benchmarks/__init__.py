"""Speed, memory and quality benchmarks of hf_mtl (see benchmarks/README.md for the module map and how to run them).

This module stays light (no torch): the constants every benchmark shares.
"""

from pathlib import Path


MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # the backbone every benchmark times by default
ROOT = Path(__file__).resolve().parents[1]  # the repository
RESULTS = ROOT / "benchmarks" / "results"  # where each benchmark writes its results by default
DATA = ROOT.parent / "shared" / "data"  # the real data sets (glue_sst2, ...), next to the checkout when present
