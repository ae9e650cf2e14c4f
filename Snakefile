# handbone: segmentation of the 29 bones of the hand in X-ray images.
# The rules live in workflow/rules/, the logic in the handbone package.
import os

from snakemake.utils import min_version

min_version("9.0")


# The path of config.yaml is relative to this file, so the workflow also
# runs with --directory elsewhere; --configfile on the command line
# overrides its values. common.smk completes and checks the config.
configfile: os.path.join(workflow.basedir, "config.yaml")


# The report's front page: rendered by `snakemake --report`, it includes the
# run's summary that rule run_summary writes (workflow/rules/analysis.smk).
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/submission.smk"
include: "workflow/rules/pseudo.smk"
include: "workflow/rules/analysis.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
