# Ensemble, threshold, submission CSV and (demo only) the held-out score.


rule ensemble:
    input:
        expand("results/predictions/{model}/test", model=MODELS),
    output:
        directory("results/ensemble/test"),
    log:
        "results/logs/ensemble.log",
    benchmark:
        "results/benchmarks/ensemble.tsv"
    threads: 1
    conda:
        ENV
    shell:
        "python -m handbone --quiet ensemble --inputs {input:q} --out-dir {output:q} 2> {log:q}"


rule submission:
    input:
        probabilities="results/ensemble/test",
        index="results/index/index.csv",
    output:
        "results/submission.csv",
    params:
        threshold=config["postprocess"]["threshold"],
    log:
        "results/logs/submission.log",
    benchmark:
        "results/benchmarks/submission.tsv"
    threads: 1
    conda:
        ENV
    shell:
        "python -m handbone --quiet submit --probabilities {input.probabilities:q} --index {input.index:q}"
        " --threshold {params.threshold} --out {output:q} 2> {log:q}"


rule score_demo:
    input:
        submission="results/submission.csv",
        index="results/index/index.csv",
        demo="results/demo",
    output:
        summary="results/scores/holdout.json",
        per_class=report(
            "results/scores/holdout_per_class.csv",
            caption="../report/holdout.rst",
            category="3. Held-out score (demo)",
        ),
        per_image="results/scores/holdout_per_image.csv",
    log:
        "results/logs/score_demo.log",
    benchmark:
        "results/benchmarks/score_demo.tsv"
    threads: 1
    conda:
        ENV
    shell:
        "python -m handbone --quiet score --submission {input.submission:q} --index {input.index:q}"
        " --ground-truth {input.demo:q}/ground_truth/test --out-dir results/scores 2> {log:q}"
