# Prediction: out-of-fold maps per fold model, test maps per model (the mean
# of its fold models), maps of extra image folders, and overlay pictures.


rule predict_oof:
    input:
        index=INDEX_CSV,
        folds=FOLDS_CSV,
        frames=FRAMES_CSV,
        checkpoint=in_round("models/{model}/fold{fold}/model.pt"),
    output:
        directory("results/predictions/{model}/oof/fold{fold}"),
    log:
        "results/logs/predict_oof/{model}/fold{fold}.log",
    benchmark:
        "results/benchmarks/predict_oof/{model}/fold{fold}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
    params:
        preprocess=as_json(config["preprocess"]),
        options=predict_options(),
    shell:
        "python -m handbone --quiet predict --index {input.index:q} --folds {input.folds:q} --fold {wildcards.fold}"
        " --frames {input.frames:q} --checkpoints {input.checkpoint:q}"
        " --preprocess {params.preprocess:q} --options {params.options:q}"
        " --out-dir {output:q} --threads {threads} 2> {log:q}"


rule predict_test:
    input:
        index=INDEX_CSV,
        frames=FRAMES_CSV,
        checkpoints=in_round("models/{model}/fold{fold}/model.pt", every=["fold"]),
    output:
        directory("results/predictions/{model}/test"),
    log:
        "results/logs/predict/{model}.log",
    benchmark:
        "results/benchmarks/predict/{model}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
    params:
        preprocess=as_json(config["preprocess"]),
        options=predict_options(),
    shell:
        "python -m handbone --quiet predict --index {input.index:q} --split test --frames {input.frames:q}"
        " --checkpoints {input.checkpoints:q}"
        " --preprocess {params.preprocess:q} --options {params.options:q}"
        " --out-dir {output:q} --threads {threads} 2> {log:q}"


rule predict_extra:
    input:
        checkpoints=expand("results/models/{{model}}/fold{fold}/model.pt", fold=FOLDS),
    output:
        directory("results/predictions/{model}/extra/{images}"),
    log:
        "results/logs/predict_extra/{model}/{images}.log",
    benchmark:
        "results/benchmarks/predict_extra/{model}/{images}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
    params:
        folder=lambda wildcards: EXTRA_IMAGES[wildcards.images],
        preprocess=as_json(config["preprocess"]),
        options=predict_options(),
    shell:
        "python -m handbone --quiet predict --images-dir {params.folder:q} --checkpoints {input.checkpoints:q}"
        " --preprocess {params.preprocess:q} --options {params.options:q}"
        " --out-dir {output:q} --threads {threads} 2> {log:q}"


rule overlays_test:
    input:
        index=INDEX_CSV,
        maps="results/ensemble/test",
        params="results/postprocess/params.json",
    output:
        report(
            directory("results/overlays/test"),
            patterns=["{name}.png"],
            caption="../report/overlays_test.rst",
            category="4. Predictions",
            subcategory="test images",
        ),
    log:
        "results/logs/overlays/test.log",
    benchmark:
        "results/benchmarks/overlays/test.tsv"
    conda:
        ENV
    threads: 1
    params:
        limit=config["predict"]["overlay_test_images"],
    shell:
        "python -m handbone --quiet overlays --index {input.index:q} --split test --maps {input.maps:q}"
        " --limit {params.limit:q} --params {input.params:q} --out-dir {output:q} 2> {log:q}"


rule overlays_extra:
    input:
        maps=expand("results/predictions/{model}/extra/{{images}}", model=MODELS),
    output:
        report(
            directory("results/overlays/extra/{images}"),
            patterns=["{name}.png"],
            caption="../report/overlays_extra.rst",
            category="4. Predictions",
            subcategory="{images}",
        ),
    log:
        "results/logs/overlays/extra_{images}.log",
    benchmark:
        "results/benchmarks/overlays/extra_{images}.tsv"
    conda:
        ENV
    threads: 1
    params:
        folder=lambda wildcards: EXTRA_IMAGES[wildcards.images],
        threshold=config["postprocess"]["threshold"],
    shell:
        "python -m handbone --quiet overlays --images-dir {params.folder:q} --maps {input.maps:q}"
        " --threshold {params.threshold:q} --out-dir {output:q} 2> {log:q}"
