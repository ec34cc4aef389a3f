#!/usr/bin/env python
"""Boosting prompts as one file to share: `python tools/export_boost.py RUN_DIR OUT_FILE
[--epoch N] [--student CLIP]` writes a phase-1 run's prompts and what they were made for
(the format: trainers/caspl_artifacts.py) and prints the TRAINER.CASPL.BOOST_CKPT value that
reads it."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainers.caspl_artifacts import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
