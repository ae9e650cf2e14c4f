# Prediction analysis, from the out-of-fold maps and the labels only (never
# a test image): Dice against bone area, the models' agreement, what each
# member adds to the ensemble, the worst images. Then the run's summary,
# which the report's front page (workflow/report/workflow.rst) includes.

ANALYSIS = "7. Prediction analysis"


rule prediction_analysis:
    input:
        oof=expand("results/predictions/{model}/oof/fold{fold}", model=MODELS, fold=FOLDS),
        folds=FOLDS_CSV,
        index=INDEX_CSV,
    output:
        per_image="results/analysis/per_image.csv",
        per_class=report(
            "results/analysis/per_class.csv",
            caption="../report/analysis_per_class.rst",
            category=ANALYSIS,
            subcategory="all models",
        ),
        similarity=report(
            "results/analysis/similarity.csv",
            caption="../report/similarity.rst",
            category=ANALYSIS,
            subcategory="all models",
        ),
        similarity_figure=report(
            "results/analysis/similarity.png",
            caption="../report/similarity_figure.rst",
            category=ANALYSIS,
            subcategory="all models",
        ),
        added_last=report(
            "results/analysis/added_last.csv",
            caption="../report/added_last.rst",
            category=ANALYSIS,
            subcategory="all models",
        ),
        dice_vs_area=report(
            directory("results/analysis/dice_vs_area"),
            patterns=["{model}.png"],
            caption="../report/dice_vs_area.rst",
            category=ANALYSIS,
            subcategory="{model}",
        ),
        worst=report(
            directory("results/analysis/worst"),
            patterns=["{model}/{name}.png"],
            caption="../report/worst_images.rst",
            category=ANALYSIS,
            subcategory="{model}",
        ),
    log:
        "results/logs/prediction_analysis.log",
    benchmark:
        "results/benchmarks/prediction_analysis.tsv"
    conda:
        ENV
    threads: 1
    params:
        # The models' OOF folders, from input.oof's fold folders.
        oof=lambda wildcards, input: list(dict.fromkeys(os.path.dirname(fold) for fold in input.oof)),
        out_dir=lambda wildcards, output: os.path.dirname(output.per_image),
    shell:
        "python -m handbone --quiet prediction-analysis --oof {params.oof:q} --folds {input.folds:q}"
        " --index {input.index:q} --out-dir {params.out_dir:q} 2> {log:q}"


rule run_summary:
    input:
        # Named as the options of `handbone run-summary`.
        index=INDEX_CSV,
        folds=FOLDS_CSV,
        outliers="results/eda/outliers.csv",
        frames=FRAMES_CSV,
        cv_metrics="results/cv/metrics.json",
        ensemble_weights="results/ensemble/weights.json",
        ensemble_table="results/ensemble/oof_scores.csv",
        postprocess_params="results/postprocess/params.json",
        postprocess_table="results/postprocess/oof_scores.csv",
        holdout="results/scores/holdout.json",
        analysis_per_class="results/analysis/per_class.csv",
        added_last="results/analysis/added_last.csv",
        test_predictions=expand("results/predictions/{model}/test", model=MODELS),
    output:
        "results/report/summary.rst",
    log:
        "results/logs/run_summary.log",
    benchmark:
        "results/benchmarks/run_summary.tsv"
    conda:
        ENV
    threads: 1
    params:
        # One option per input; a list (the test predictions) after one option.
        files=lambda wildcards, input: " ".join(
            f"--{name.replace('_', '-')} "
            + " ".join(shlex.quote(path) for path in ([paths] if isinstance(paths, str) else paths))
            for name, paths in input.items()
        ),
    shell:
        "python -m handbone --quiet run-summary {params.files} --out {output:q} 2> {log:q}"
