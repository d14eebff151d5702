"""Training: a lowered net trained on image folders (or the bundled digits), evaluated and used.

    config.py      every setting, merged from recipe < spec < YAML < flags and checked once
    data.py        folder layout, image sources, the epoch sampler, statistics, the net's ends
    images.py      decoding and crops, in the loader workers
    loading.py     DataLoaders, and preprocessing on the device
    loop.py        the Trainer and `train` (DDP, resume, signals)
    checkpoint.py  atomic checkpoints and RNG states;   rundir.py  the run directory's other files
    evaluate.py    evaluation (centre and 10 crops) and prediction
    metrics.py     accuracy, reduced sums, throughput, TensorBoard;   plot.py  curves.png
    host.py        process tuning for shared CPUs
"""
