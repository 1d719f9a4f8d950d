"""The DMMSA reference system: ConFEDE's architecture trained with the DMMSA objective.

Import it as a package (``pip install -e examples`` from the repository root); the scripts
``examples/dmmsa/train.py`` (or ``python -m dmmsa.train``), ``python -m dmmsa.compare`` (the
paired comparison of objectives on prepared pickles; ``evaluate_real.py`` runs it for the tables
of ``docs/results.md``) and ``python -m dmmsa.prepare`` are its commands.

The public surface is each module's ``__all__``; the modules, in the order a run uses them:

- :mod:`dmmsa.cli`: ``parse_args`` and ``resolve_config``, the one function that turns the
  arguments and the data's facts into the frozen :class:`dmmsa.configs.RunConfig`;
- :mod:`dmmsa.configs`: the presets (Table 6 and the synthetic default), with the types,
  ``freeze`` and ``fingerprint`` of :mod:`dmmsa.config_types`;
- :mod:`dmmsa.data`: ``load_mmsa`` (checks and cleans an MMSA pickle), with the per-key checks
  of :mod:`dmmsa.split_checks`, into the types of :mod:`dmmsa.feature_file` (``MMSASplit``,
  ``facts_of``, ``file_digest``);
  :mod:`dmmsa.batching`: ``MSADataset`` and ``make_loader`` (the samples as tensors, batched);
  :mod:`dmmsa.synthetic`: the embedded default data;
- :mod:`dmmsa.model`: ``DMMSAModel`` (encoders + the library's decomposition head) and
  ``UnimodalRegressor`` (what a pre-training phase trains);
- :mod:`dmmsa.objectives`: the objectives of the two stages (the fusion's: a recipe of
  ``mt.recipes``); :mod:`dmmsa.retrieval`: ConFEDE's retrieved samples;
- :mod:`dmmsa.run_state`: ``Run``, ``Phase``, ``TrainingStopped``;
  :mod:`dmmsa.training`: the loop: ``build_phase``, ``train_step``, ``end_epoch``,
  ``train_phase``, ``run_seed``; :mod:`dmmsa.feature_cache`: ``--freeze-encoders`` and its
  cached encoder outputs;
  :mod:`dmmsa.runlock`: one writer per output (``OUT/.lock``);
  :mod:`dmmsa.checkpoint`: ``Checkpointer`` (save, resume, RNG states);
  :mod:`dmmsa.distributed`: ``Dist`` (``torchrun``); :mod:`dmmsa.evaluation`: ``predict`` and
  ``metrics_of``;
- :mod:`dmmsa.reporting`: tables, plots, mean ± std and the JSON/CSV files, for ``train.py`` and
  ``compare.py`` alike; :mod:`dmmsa.variants`: the comparison's variants;
  :mod:`dmmsa.compare_tables` and :mod:`dmmsa.stats`: the comparison's tables, paired test and
  figure; :mod:`dmmsa.text_alone`: the pre-trained text model alone;
- :mod:`dmmsa.prepare`: raw label files (+ audio, visual features) to MMSA pickles, in the steps
  of :mod:`dmmsa.prepare_steps`, :mod:`dmmsa.prepare_labels`, :mod:`dmmsa.prepare_text`,
  :mod:`dmmsa.prepare_audio` and :mod:`dmmsa.prepare_outputs`;
- :mod:`dmmsa.checks`: the number checks of arguments (``is_int``, ``is_real``).
"""
# It is not part of the `mtobjectives` wheel: install it next to the library with
# `pip install -e examples` (`make demo` and `make test` do). The scripts keep working from the
# repository root: `python examples/dmmsa/train.py ...`.

__all__ = ["batching", "checkpoint", "checks", "cli", "compare", "compare_tables", "config_types",
           "configs", "data", "distributed", "evaluation", "feature_cache", "feature_file", "model",
           "objectives",
           "prepare", "prepare_outputs", "reporting", "retrieval", "run_state", "runlock",
           "split_checks",
           "stats", "synthetic", "text_alone", "training", "variants"]
