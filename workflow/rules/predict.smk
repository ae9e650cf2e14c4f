# Prediction: per model, the mean of its fold models on the test images.


rule predict_test:
    input:
        index="results/index/index.csv",
        checkpoints=expand("results/models/{{model}}/fold{fold}/model.pt", fold=FOLDS),
    output:
        directory("results/predictions/{model}/test"),
    params:
        preprocess=as_json(config["preprocess"]),
        hflip="--hflip" if config["predict"]["hflip"] else "--no-hflip",
        scales=" ".join(str(float(scale)) for scale in config["predict"]["scales"]),
        overlap=config["predict"]["overlap"],
        batch_size=config["predict"]["batch_size"],
    log:
        "results/logs/predict/{model}.log",
    benchmark:
        "results/benchmarks/predict/{model}.tsv"
    threads: 4
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "python -m handbone --quiet predict --index {input.index:q} --checkpoints {input.checkpoints:q}"
        " --preprocess {params.preprocess:q} {params.hflip} --scales {params.scales} --overlap {params.overlap}"
        " --batch-size {params.batch_size} --out-dir {output:q} --threads {threads} 2> {log:q}"
