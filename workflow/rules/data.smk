# Data: the synthetic demo set, the index, the EDA summary, folds, cache.


rule demo_data:
    output:
        directory("results/demo"),
    log:
        "results/logs/demo_data.log",
    benchmark:
        "results/benchmarks/demo_data.tsv"
    conda:
        ENV
    threads: 1
    params:
        arguments=synthetic_arguments(),
    shell:
        "python -m handbone --quiet demo-data --out {output:q} {params.arguments} 2> {log:q}"


rule index:
    input:
        data_root_input(),
    output:
        INDEX_CSV,
    log:
        "results/logs/index.log",
    benchmark:
        "results/benchmarks/index.tsv"
    conda:
        ENV
    threads: 1
    params:
        data_root=DATA_ROOT,
    shell:
        "python -m handbone --quiet index --data-root {params.data_root:q} --out {output:q} 2> {log:q}"


rule eda:
    input:
        INDEX_CSV,
    output:
        class_stats=report(
            "results/eda/class_stats.csv",
            caption="../report/class_stats.rst",
            category="1. Data",
            subcategory="Tables",
        ),
        image_stats=report(
            "results/eda/image_stats.csv",
            caption="../report/image_stats.rst",
            category="1. Data",
            subcategory="Tables",
        ),
        overlap=report(
            "results/eda/overlap.csv", caption="../report/overlap.rst", category="1. Data", subcategory="Tables"
        ),
        outliers=report(
            "results/eda/outliers.csv", caption="../report/outliers.rst", category="1. Data", subcategory="Outliers"
        ),
        findings="results/eda/findings.json",
        centroids=report(
            "results/eda/figures/centroids.png",
            caption="../report/centroids.rst",
            category="1. Data",
            subcategory="Figures",
        ),
        areas=report(
            "results/eda/figures/areas.png", caption="../report/areas.rst", category="1. Data", subcategory="Figures"
        ),
        intensity=report(
            "results/eda/figures/intensity.png",
            caption="../report/intensity.rst",
            category="1. Data",
            subcategory="Figures",
        ),
        rotation=report(
            "results/eda/figures/rotation.png",
            caption="../report/rotation.rst",
            category="1. Data",
            subcategory="Figures",
        ),
        overlap_heatmap=report(
            "results/eda/figures/overlap.png",
            caption="../report/overlap_heatmap.rst",
            category="1. Data",
            subcategory="Figures",
        ),
    log:
        "results/logs/eda.log",
    benchmark:
        "results/benchmarks/eda.tsv"
    conda:
        ENV
    threads: 1
    shell:
        "python -m handbone --quiet eda --index {input:q} --out-dir results/eda 2> {log:q}"


rule split:
    input:
        index=INDEX_CSV,
        outliers="results/eda/outliers.csv",
        image_stats="results/eda/image_stats.csv",
    output:
        folds=report(
            FOLDS_CSV,
            caption="../report/folds.rst",
            category="2. Cross-validation",
            subcategory="folds",
        ),
        excluded=report(
            "results/splits/excluded.csv", caption="../report/excluded.rst", category="1. Data", subcategory="Outliers"
        ),
    log:
        "results/logs/split.log",
    benchmark:
        "results/benchmarks/split.tsv"
    conda:
        ENV
    threads: 1
    params:
        folds=config["cv"]["folds"],
        stratify=config["cv"]["stratify"],
        exclude_reasons=as_json(config["outliers"]["exclude_reasons"]),
        exclude=as_json(config["outliers"]["exclude"]),
        include=as_json(config["outliers"]["include"]),
    shell:
        "python -m handbone --quiet split --index {input.index:q} --folds {params.folds:q} --stratify {params.stratify:q}"
        " --image-stats {input.image_stats:q} --outliers {input.outliers:q}"
        " --exclude-reasons {params.exclude_reasons:q} --exclude {params.exclude:q} --include {params.include:q}"
        " --out {output.folds:q} --excluded-out {output.excluded:q} 2> {log:q}"


rule frames:
    input:
        index=INDEX_CSV,
        image_stats="results/eda/image_stats.csv",
    output:
        report(
            FRAMES_CSV,
            caption="../report/frames.rst",
            category="1. Data",
            subcategory="Tables",
        ),
    log:
        "results/logs/frames.log",
    benchmark:
        "results/benchmarks/frames.tsv"
    conda:
        ENV
    threads: 1
    params:
        options=as_json(frame_options()),
    shell:
        "python -m handbone --quiet frames --index {input.index:q} --image-stats {input.image_stats:q}"
        " --options {params.options:q} --out {output:q} 2> {log:q}"


rule preprocess:
    input:
        index=INDEX_CSV,
        frames=FRAMES_CSV,
    output:
        directory(CACHE),
    log:
        "results/logs/preprocess.log",
    benchmark:
        "results/benchmarks/preprocess.tsv"
    conda:
        ENV
    threads: 1
    params:
        options=as_json(config["preprocess"]),
    shell:
        "python -m handbone --quiet preprocess --index {input.index:q} --frames {input.frames:q}"
        " --options {params.options:q} --out {output:q} 2> {log:q}"


# Not part of `all` (it needs graphviz's dot): snakemake --cores 1 dag
rule dag:
    output:
        config="results/dag/config.json",
        rulegraph="results/dag/rulegraph.svg",
        dag="results/dag/dag.svg",
    log:
        "results/logs/dag.log",
    conda:
        ENV
    threads: 1
    params:
        # The graphs are drawn for this run's config, whatever --configfile gave.
        config=as_json(config),
        snakefile=workflow.main_snakefile,
    shell:
        "printf '%s\\n' {params.config:q} > {output.config:q}; "
        "for graph in rulegraph dag; do"
        " snakemake -s {params.snakefile:q} --configfile {output.config:q} --replace-workflow-config --nolock --$graph"
        " 2>> {log:q} | dot -Tsvg > results/dag/$graph.svg.tmp && mv results/dag/$graph.svg.tmp results/dag/$graph.svg;"
        " done"
