# handbone: segmentation of the 29 bones of the hand in X-ray images.
# The rules live in workflow/rules/, the logic in the handbone package.
import os

from snakemake.utils import min_version, validate

min_version("9.0")


# Paths of the config and schema are relative to this file, so the workflow
# also runs with --directory elsewhere; --configfile on the command line
# overrides values of config.yaml.
configfile: os.path.join(workflow.basedir, "config.yaml")


validate(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/submission.smk"
include: "workflow/rules/pseudo.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
