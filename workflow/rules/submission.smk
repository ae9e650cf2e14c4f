# Ensemble and post-processing: fitted on out-of-fold maps only, frozen,
# then applied to the test maps; the submission CSV; the held-out score
# (demo only).


rule fit_ensemble:
    input:
        oof=in_round("predictions/{model}/oof/fold{fold}", every=["model", "fold"]),
        folds=FOLDS_CSV,
        cache=CACHE,
    output:
        weights="results/ensemble/weights.json",
        table="results/ensemble/oof_scores.csv",
    log:
        "results/logs/fit_ensemble.log",
    benchmark:
        "results/benchmarks/fit_ensemble.tsv"
    conda:
        ENV
    threads: 1
    params:
        # The models' OOF folders, from input.oof's fold folders (so also in pseudo.smk's rounds).
        oof=lambda wildcards, input: list(dict.fromkeys(os.path.dirname(fold) for fold in input.oof)),
        options=as_json(config["ensemble"]),
    shell:
        "python -m handbone --quiet fit-ensemble --oof {params.oof:q} --folds {input.folds:q} --cache {input.cache:q}"
        " --options {params.options:q} --out {output.weights:q} --table {output.table:q} 2> {log:q}"


rule fit_postprocess:
    input:
        oof=in_round("predictions/{model}/oof/fold{fold}", every=["model", "fold"]),
        folds=FOLDS_CSV,
        cache=CACHE,
        weights=in_round("ensemble/weights.json"),
        ensemble_table=in_round("ensemble/oof_scores.csv"),
    output:
        params="results/postprocess/params.json",
        table=report(
            "results/postprocess/oof_scores.csv",
            caption="../report/oof_scores.rst",
            category="3. Ensemble and post-processing",
        ),
        figure=report(
            "results/postprocess/per_class_dice.png",
            caption="../report/oof_per_class.rst",
            category="3. Ensemble and post-processing",
        ),
        summary="results/postprocess/oof.json",
    log:
        "results/logs/fit_postprocess.log",
    benchmark:
        "results/benchmarks/fit_postprocess.tsv"
    conda:
        ENV
    threads: 1
    params:
        oof=lambda wildcards, input: list(dict.fromkeys(os.path.dirname(fold) for fold in input.oof)),
        options=as_json(config["postprocess"]),
    shell:
        "python -m handbone --quiet fit-postprocess --oof {params.oof:q} --folds {input.folds:q} --cache {input.cache:q}"
        " --ensemble {input.weights:q} --ensemble-table {input.ensemble_table:q} --options {params.options:q}"
        " --out {output.params:q} --table {output.table:q} --figure {output.figure:q} --summary {output.summary:q}"
        " 2> {log:q}"


rule ensemble:
    input:
        maps=in_round("predictions/{model}/test", every=["model"]),
        weights=in_round("ensemble/weights.json"),
    output:
        directory("results/ensemble/test"),
    log:
        "results/logs/ensemble.log",
    benchmark:
        "results/benchmarks/ensemble.tsv"
    conda:
        ENV
    threads: 2
    shell:
        "python -m handbone --quiet ensemble --inputs {input.maps:q} --weights {input.weights:q} --out-dir {output:q}"
        " --threads {threads} 2> {log:q}"


rule submission:
    input:
        probabilities=in_round("ensemble/test"),
        index=INDEX_CSV,
        params=in_round("postprocess/params.json"),
    output:
        "results/submission.csv",
    log:
        "results/logs/submission.log",
    benchmark:
        "results/benchmarks/submission.tsv"
    conda:
        ENV
    threads: 2
    shell:
        "python -m handbone --quiet submit --probabilities {input.probabilities:q} --index {input.index:q}"
        " --params {input.params:q} --out {output:q} --threads {threads} 2> {log:q}"


rule score:
    input:
        submission=in_round("submission.csv"),
        index=INDEX_CSV,
        demo=["results/demo"] if DEMO else [],
    output:
        summary="results/scores/holdout.json",
        per_class=report(
            "results/scores/holdout_per_class.csv",
            caption="../report/holdout.rst",
            category="5. Held-out score (demo)",
        ),
        per_image="results/scores/holdout_per_image.csv",
    log:
        "results/logs/score.log",
    benchmark:
        "results/benchmarks/score.tsv"
    conda:
        ENV
    threads: 1
    params:
        ground_truth="--ground-truth results/demo/ground_truth/test" if DEMO else "",
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "python -m handbone --quiet score --submission {input.submission:q} --index {input.index:q}"
        " {params.ground_truth} --out-dir {params.out_dir:q} 2> {log:q}"
