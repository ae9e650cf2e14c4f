"""handbone: segmentation of the 29 bones of the hand in X-ray images.

All of the workflow's logic lives in this package; the Snakemake rules only
wire files together and call the ``handbone`` command-line tool.
"""

import os

# albumentations asks PyPI for its latest version when imported; nothing in
# this project may reach the network at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
