#!/usr/bin/env python
"""Train or evaluate a method: `python train.py --trainer CoOp --dataset-config-file ... --config-file ...`.

Imports the plugin folders (trainers/, datasets/) beside this file, which register
themselves, then hands over to caspl.cli."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import datasets  # noqa: E402,F401  (registers the datasets)
import trainers  # noqa: E402,F401  (registers the trainers)
from caspl.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
