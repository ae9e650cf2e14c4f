# Pseudo-labelling (pseudo_label.enabled): rounds 2, 3, ... under
# results/pseudo/round{r}/. Round r's fold-k models train on fold k's
# training images plus the test images that round r-1's fold-k models label
# confidently; then the round predicts, fits its ensemble and
# post-processing on its own OOF maps (real labels only) and submits. The
# rules are round 1's (use rule ... as ..._pseudo), pointed at the round's
# folders, and keep round 1's inputs: those that depend on the round are
# computed from the job's {round} wildcard (common.smk's in_round and
# round_pseudo_labels; round 1's jobs have none), the shared ones are
# named once (INDEX_CSV, FOLDS_CSV, FRAMES_CSV, CACHE), and params that
# follow from the paths are computed from them in round 1's rules (fit_*,
# score). Each block restates only what Snakemake makes it: a `with:`
# output, log or benchmark replaces round 1's whole list, and outputs are
# patterns, not functions of the round.


# A focal loss with pseudo_label.ignore_uncertain cannot train a round; the
# config check (common.smk, handbone.config.contradictions) refuses it at
# the start, so that a whole round 1 does not run before train_pseudo fails.


rule pseudo_label:
    input:
        index=INDEX_CSV,
        frames=FRAMES_CSV,
        checkpoints=lambda wildcards: expand(
            "{folder}/models/{model}/fold{fold}/model.pt",
            folder=round_dir(int(wildcards.round) - 1),
            model=round_models(int(wildcards.round) - 1),
            fold=wildcards.fold,
        ),
    output:
        directory("results/pseudo/round{round}/labels/fold{fold}"),
    log:
        "results/logs/pseudo/round{round}/pseudo_label/fold{fold}.log",
    benchmark:
        "results/benchmarks/pseudo/round{round}/pseudo_label/fold{fold}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
    params:
        preprocess=as_json(config["preprocess"]),
        options=predict_options(),
        confidence=PSEUDO["confidence"],
        pixel_confidence=PSEUDO["pixel_confidence"],
        ignore="--ignore-uncertain" if PSEUDO["ignore_uncertain"] else "--no-ignore-uncertain",
    shell:
        "python -m handbone --quiet pseudo-label --index {input.index:q} --frames {input.frames:q}"
        " --checkpoints {input.checkpoints:q}"
        " --confidence {params.confidence} --pixel-confidence {params.pixel_confidence} {params.ignore}"
        " --preprocess {params.preprocess:q} --options {params.options:q}"
        " --out-dir {output:q} --threads {threads} 2> {log:q}"


# params.pseudo_labels is computed from the round's input here, not in rule
# train for every round: Snakemake leaves params computed from the input
# out of its params rerun trigger, so replacing round 1's recorded ""
# (train.smk) by such a function would rerun every finished round-1
# training once.
use rule train as train_pseudo with:
    output:
        checkpoint="results/pseudo/round{round}/models/{model}/fold{fold}/model.pt",
        metrics="results/pseudo/round{round}/models/{model}/fold{fold}/metrics.json",
        history="results/pseudo/round{round}/models/{model}/fold{fold}/history.csv",
    log:
        "results/logs/pseudo/round{round}/train/{model}/fold{fold}.log",
    benchmark:
        "results/benchmarks/pseudo/round{round}/train/{model}/fold{fold}.tsv"
    params:
        pseudo_labels=lambda wildcards, input: f"--pseudo-labels {shlex.quote(input.pseudo_labels[0])}",


use rule predict_oof as predict_oof_pseudo with:
    output:
        directory("results/pseudo/round{round}/predictions/{model}/oof/fold{fold}"),
    log:
        "results/logs/pseudo/round{round}/predict_oof/{model}/fold{fold}.log",
    benchmark:
        "results/benchmarks/pseudo/round{round}/predict_oof/{model}/fold{fold}.tsv"


use rule predict_test as predict_test_pseudo with:
    output:
        directory("results/pseudo/round{round}/predictions/{model}/test"),
    log:
        "results/logs/pseudo/round{round}/predict/{model}.log",
    benchmark:
        "results/benchmarks/pseudo/round{round}/predict/{model}.tsv"


use rule fit_ensemble as fit_ensemble_pseudo with:
    output:
        weights="results/pseudo/round{round}/ensemble/weights.json",
        table="results/pseudo/round{round}/ensemble/oof_scores.csv",
    log:
        "results/logs/pseudo/round{round}/fit_ensemble.log",
    benchmark:
        "results/benchmarks/pseudo/round{round}/fit_ensemble.tsv"


use rule fit_postprocess as fit_postprocess_pseudo with:
    output:
        params="results/pseudo/round{round}/postprocess/params.json",
        table=report(
            "results/pseudo/round{round}/postprocess/oof_scores.csv",
            caption="../report/pseudo_oof.rst",
            category="6. Pseudo-labelling",
            subcategory="round {round}",
        ),
        figure="results/pseudo/round{round}/postprocess/per_class_dice.png",
        summary="results/pseudo/round{round}/postprocess/oof.json",
    log:
        "results/logs/pseudo/round{round}/fit_postprocess.log",
    benchmark:
        "results/benchmarks/pseudo/round{round}/fit_postprocess.tsv"


use rule ensemble as ensemble_pseudo with:
    output:
        directory("results/pseudo/round{round}/ensemble/test"),
    log:
        "results/logs/pseudo/round{round}/ensemble.log",
    benchmark:
        "results/benchmarks/pseudo/round{round}/ensemble.tsv"


use rule submission as submission_pseudo with:
    output:
        "results/pseudo/round{round}/submission.csv",
    log:
        "results/logs/pseudo/round{round}/submission.log",
    benchmark:
        "results/benchmarks/pseudo/round{round}/submission.tsv"


use rule score as score_pseudo with:
    output:
        summary="results/pseudo/round{round}/scores/holdout.json",
        per_class="results/pseudo/round{round}/scores/holdout_per_class.csv",
        per_image="results/pseudo/round{round}/scores/holdout_per_image.csv",
    log:
        "results/logs/pseudo/round{round}/score.log",
    benchmark:
        "results/benchmarks/pseudo/round{round}/score.tsv"


ALL_ROUNDS = [1] + PSEUDO_ROUNDS


rule compare_rounds:
    input:
        oof=[f"{round_dir(number)}/postprocess/oof_scores.csv" for number in ALL_ROUNDS],
        holdout=[f"{round_dir(number)}/scores/holdout_per_class.csv" for number in ALL_ROUNDS],
        labels=expand("results/pseudo/round{round}/labels/fold{fold}", round=PSEUDO_ROUNDS, fold=FOLDS),
    output:
        table=report(
            "results/pseudo/rounds.csv",
            caption="../report/pseudo_rounds.rst",
            category="6. Pseudo-labelling",
            subcategory="rounds compared",
        ),
        figure=report(
            "results/pseudo/rounds.png",
            caption="../report/pseudo_rounds.rst",
            category="6. Pseudo-labelling",
            subcategory="rounds compared",
        ),
    log:
        "results/logs/pseudo/compare_rounds.log",
    benchmark:
        "results/benchmarks/pseudo/compare_rounds.tsv"
    conda:
        ENV
    threads: 1
    shell:
        "python -m handbone --quiet compare-rounds --oof-tables {input.oof:q} --holdout-tables {input.holdout:q}"
        " --labels {input.labels:q} --out {output.table:q} --figure {output.figure:q} 2> {log:q}"
