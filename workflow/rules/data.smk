# Data: the synthetic demo set, the index, the EDA summary, folds, cache.


rule demo_data:
    output:
        directory("results/demo"),
    params:
        arguments=synthetic_arguments(),
    log:
        "results/logs/demo_data.log",
    benchmark:
        "results/benchmarks/demo_data.tsv"
    threads: 1
    conda:
        ENV
    shell:
        "{HANDBONE} demo-data --out {output:q} {params.arguments} 2> {log:q}"


rule index:
    input:
        data_root_input(),
    output:
        "results/index/index.csv",
    params:
        data_root=DATA_ROOT,
    log:
        "results/logs/index.log",
    benchmark:
        "results/benchmarks/index.tsv"
    threads: 1
    conda:
        ENV
    shell:
        "{HANDBONE} index --data-root {params.data_root:q} --out {output:q} 2> {log:q}"


rule eda:
    input:
        "results/index/index.csv",
    output:
        report(
            "results/eda/class_stats.csv",
            caption="../report/class_stats.rst",
            category="1. Data",
        ),
        "results/eda/image_stats.csv",
    log:
        "results/logs/eda.log",
    benchmark:
        "results/benchmarks/eda.tsv"
    threads: 1
    conda:
        ENV
    shell:
        "{HANDBONE} eda --index {input:q} --out-dir results/eda 2> {log:q}"


rule split:
    input:
        "results/index/index.csv",
    output:
        "results/splits/folds.csv",
    params:
        folds=config["cv"]["folds"],
    log:
        "results/logs/split.log",
    benchmark:
        "results/benchmarks/split.tsv"
    threads: 1
    conda:
        ENV
    shell:
        "{HANDBONE} split --index {input:q} --folds {params.folds} --out {output:q} 2> {log:q}"


rule preprocess:
    input:
        "results/index/index.csv",
    output:
        directory("results/cache/train"),
    params:
        options=as_json(config["preprocess"]),
    log:
        "results/logs/preprocess.log",
    benchmark:
        "results/benchmarks/preprocess.tsv"
    threads: 1
    conda:
        ENV
    shell:
        "{HANDBONE} preprocess --index {input:q} --options {params.options:q} --out {output:q} 2> {log:q}"
