# Training: one job per model and fold, each holding one GPU slot.


rule train:
    input:
        cache=CACHE,
        folds="results/splits/folds.csv",
    output:
        checkpoint="results/models/{model}/fold{fold}/model.pt",
        metrics="results/models/{model}/fold{fold}/metrics.json",
        history="results/models/{model}/fold{fold}/history.csv",
    params:
        spec=lambda wildcards: as_json(model_spec(wildcards.model)),
        options=lambda wildcards: as_json(train_options(wildcards.model)),
    log:
        "results/logs/train/{model}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train/{model}/fold{fold}.tsv"
    threads: 4
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "python -m handbone --quiet train --cache {input.cache:q} --folds {input.folds:q} --fold {wildcards.fold}"
        " --model-spec {params.spec:q} --options {params.options:q}"
        " --out-dir results/models/{wildcards.model}/fold{wildcards.fold} --threads {threads} 2> {log:q}"


rule cv_summary:
    input:
        expand("results/models/{model}/fold{fold}/metrics.json", model=MODELS, fold=FOLDS),
    output:
        report(
            "results/cv/cv_scores.csv",
            caption="../report/cv_scores.rst",
            category="2. Cross-validation",
        ),
    log:
        "results/logs/cv_summary.log",
    benchmark:
        "results/benchmarks/cv_summary.tsv"
    threads: 1
    conda:
        ENV
    shell:
        "python -m handbone --quiet cv-summary --metrics {input:q} --out {output:q} 2> {log:q}"
