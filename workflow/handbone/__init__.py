"""handbone: segmentation of the 29 bones of the hand in X-ray images.

All of the workflow's logic lives in this package; the Snakemake rules only
wire files together and call the ``handbone`` command-line tool.
"""

__version__ = "0.1.0"
