# Training: one job per model and fold, each holding one GPU slot.


# Before any job runs (not for a dry run, nor when nothing is to be done),
# each model that a job of this run trains, predicts with or pseudo-labels
# with is built once and pushed through a shape check at every input size
# and the batch size it will see, so a typo in an architecture or encoder
# name, a combination that cannot work or missing pretrained weights stop
# the run with one message naming every model concerned. Pretrained weights
# are loaded (offline, from the weights cache) only for a model this run
# trains: prediction reads the whole network from the checkpoint. A run
# without such jobs (e.g. --until preprocess) checks nothing. The jobs are
# those Snakemake will run (workflow.dag.needrun_jobs(), already restricted
# by targets, --until and --omit-from when onstart is called; this workflow
# has no checkpoint rules that add jobs later). It is a gate, not a rule: as
# a rule its output would make every model's training out of date whenever
# one model changed, or, as an ancient() input, Snakemake (9.27) would
# ignore the changed params of every job below it in that run.
onstart:
    models_used = models_of_jobs(workflow.dag.needrun_jobs())
    if models_used and not workflow.touch:
        os.makedirs("results/logs", exist_ok=True)
        os.makedirs("results/checks", exist_ok=True)
        checked_models = as_json(
            {
                model: model_spec(model) if trained else {**model_spec(model), "encoder_weights": None}
                for model, trained in models_used.items()
            }
        )
        checked_options = as_json({model: train_options(model) for model in models_used})
        checked_scales = " ".join(str(float(scale)) for scale in config["predict"]["scales"])
        shell(
            "python -m handbone --quiet check-models --models {checked_models:q} --options {checked_options:q}"
            " --scales {checked_scales} --out results/checks/models.json 2> results/logs/check_models.log"
            " || {{ cat results/logs/check_models.log >&2; exit 1; }}"
        )


rule train:
    input:
        cache=CACHE,
        folds=FOLDS_CSV,
        # In a pseudo-labelling round (pseudo.smk's train_pseudo), the fold's pseudo-labels; none in round 1.
        pseudo_labels=round_pseudo_labels,
    output:
        checkpoint="results/models/{model}/fold{fold}/model.pt",
        metrics="results/models/{model}/fold{fold}/metrics.json",
        history="results/models/{model}/fold{fold}/history.csv",
    log:
        "results/logs/train/{model}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train/{model}/fold{fold}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
    params:
        spec=lambda wildcards: as_json(model_spec(wildcards.model)),
        options=lambda wildcards: as_json(train_options(wildcards.model)),
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
        pseudo_labels="",  # pseudo-labelling rounds (pseudo.smk) add their labels here
    shell:
        "python -m handbone --quiet train --cache {input.cache:q} --folds {input.folds:q} --fold {wildcards.fold}"
        " --model-spec {params.spec:q} --options {params.options:q} {params.pseudo_labels}"
        " --out-dir {params.out_dir:q} --threads {threads} 2> {log:q}"


rule cv_model:
    input:
        metrics=expand("results/models/{{model}}/fold{fold}/metrics.json", fold=FOLDS),
        history=expand("results/models/{{model}}/fold{fold}/history.csv", fold=FOLDS),
    output:
        table="results/cv/models/{model}/cv_scores.csv",
        history="results/cv/models/{model}/history.csv",
        figure=report(
            "results/cv/models/{model}/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="2. Cross-validation",
            subcategory="{model}",
        ),
    log:
        "results/logs/cv_model/{model}.log",
    benchmark:
        "results/benchmarks/cv_model/{model}.tsv"
    conda:
        ENV
    threads: 1
    shell:
        "python -m handbone --quiet cv-summary --metrics {input.metrics:q} --history {input.history:q}"
        " --out {output.table:q} --history-out {output.history:q} --figure {output.figure:q} 2> {log:q}"


rule cv_summary:
    input:
        expand("results/cv/models/{model}/cv_scores.csv", model=MODELS),
    output:
        table=report(
            "results/cv/cv_scores.csv",
            caption="../report/cv_scores.rst",
            category="2. Cross-validation",
            subcategory="all models",
        ),
        metrics="results/cv/metrics.json",
        figure=report(
            "results/cv/per_class_dice.png",
            caption="../report/cv_per_class.rst",
            category="2. Cross-validation",
            subcategory="all models",
        ),
    log:
        "results/logs/cv_summary.log",
    benchmark:
        "results/benchmarks/cv_summary.tsv"
    conda:
        ENV
    threads: 1
    shell:
        "python -m handbone --quiet cv-combine --tables {input:q} --out {output.table:q}"
        " --metrics-out {output.metrics:q} --figure {output.figure:q} 2> {log:q}"
