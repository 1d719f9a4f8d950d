"""The command line of ``train.py`` and the one function that resolves the configuration.

:func:`parse_args` reads and checks the arguments; :func:`resolve_config` turns them and the
data's facts (``data.DataFacts``: feature widths, modalities) into the final
:class:`~dmmsa.configs.RunConfig`, frozen. Nothing changes the configuration afterwards.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from dmmsa import configs, data
from mtobjectives import has_text_anchored_pair

__all__ = ["DATASET_RANGES", "MOSEI_MIN_CLIPS", "OBJECTIVES", "check_text_model", "data_path",
           "decide_dataset", "generates_synthetic", "load_range", "parse_args",
           "resolve_config"]


#: The fusion objectives of ``--objective`` (``baseline`` is ``plain``'s earlier name).
OBJECTIVES: tuple[str, ...] = ("dmmsa", "confede", "self_mm", "misa", "plain", "baseline")


#: The sentiment interval of each dataset kind (paper section 3.1).
DATASET_RANGES: dict[str, tuple[float, float]] = {
    "sims": (-1.0, 1.0), "mosi": (-3.0, 3.0), "mosei": (-3.0, 3.0)}

#: A file with at least this many clips and labels beyond [-1, 1] is taken for CMU-MOSEI
#: (22,856 clips) rather than CMU-MOSI (2,199).
MOSEI_MIN_CLIPS = 10_000


def decide_dataset(label_bound: float, clips: int) -> tuple[str, str]:
    """The dataset kind of a file from its facts, and the reason, in words.

    Labels within ``[-1, 1]`` are CH-SIMS's scale; otherwise (``[-3, 3]``) a file of at least
    :data:`MOSEI_MIN_CLIPS` clips is CMU-MOSEI-like, a smaller one CMU-MOSI-like.

    Example:
        >>> [decide_dataset(bound, clips)[0] for bound, clips in ((1.0, 2281), (3.0, 22856),
        ...                                                       (3.0, 2199))]
        ['sims', 'mosei', 'mosi']
    """
    if label_bound <= 1.0:
        return "sims", f"every label lies in [-1, 1] (largest |y| {label_bound:g})"
    size = "at least" if clips >= MOSEI_MIN_CLIPS else "fewer than"
    return ("mosei" if clips >= MOSEI_MIN_CLIPS else "mosi",
            f"labels up to |y| = {label_bound:g} and {clips} clips ({size} {MOSEI_MIN_CLIPS})")


def _add_what_arguments(parser: argparse.ArgumentParser) -> None:
    """What is trained: preset, data, text encoder, modalities, stages."""
    parser.add_argument("--config", default="synthetic", choices=configs.config_names(),
                        help="Table 6 preset (sims, mosi, mosei), the real-data presets of "
                             "docs/results.md (mosi400, mosi_text), 'text' (any MMSA-style "
                             "text-only file: CMU-MOSI, CMU-MOSEI or CH-SIMS-like, the dataset "
                             "decided from the data, see --dataset), or the embedded synthetic "
                             "default")
    parser.add_argument("--dataset", default=None, choices=("auto", "mosi", "mosei", "sims"),
                        help="the kind of data, which decides the coarse bins, the metrics and "
                             "the label range: 'auto' decides from the file (every label in "
                             "[-1, 1]: sims; else at least "
                             f"{MOSEI_MIN_CLIPS} clips: mosei; else mosi) and logs its "
                             "choice (default: the preset's; 'auto' for --config text)")
    parser.add_argument("--data", type=Path, default=None,
                        help="MMSA feature pickle (synthetic without --data: generated into "
                             "OUT/data/synthetic.pkl if absent)")
    parser.add_argument("--generate-synthetic", action="store_true",
                        help="with --config synthetic: write the synthetic data into --data if "
                             "that file does not exist (without it a missing --data is an error)")
    parser.add_argument("--text-model", default=None,
                        help="BERT name or local folder; implies --text-source bert "
                             "(default: the config's model)")
    parser.add_argument("--text-source", default=None, choices=("bert", "features"),
                        help="text as token ids through BERT, or the file's precomputed token "
                             "features through a Transformer (default: the config's)")
    parser.add_argument("--modalities", default=None,
                        help="subset of TAV to use, e.g. 'T' or 'TA' (default: the config's)")
    parser.add_argument("--stage", default="both", choices=("pretrain", "fusion", "both"))


def _add_objective_arguments(parser: argparse.ArgumentParser) -> None:
    """The fusion objective and its ablations (Table 5)."""
    parser.add_argument("--objective", default="dmmsa", choices=OBJECTIVES,
                        help="the fusion stage's objective, a recipe of mt.recipes: dmmsa (the "
                             "paper's Eq. 5; the flags below up to --weight-scale are its "
                             "options), confede (ConFEDE's, with its sample selector: "
                             "--confede-sampler, --rebuild-every), self_mm (Self-MM's, on "
                             "generated unimodal labels), misa (MISA's, with reconstruction "
                             "decoders), plain (SmoothL1 fused + unimodal, fixed weights 1; "
                             "'baseline' is its earlier name)")
    parser.add_argument("--confede-sampler", default=None, choices=("as_written", "intended"),
                        help="--objective confede only: the ids ConFEDE's code hands out "
                             "(as_written, default) or those its ranking meant (intended)")
    parser.add_argument("--freeze-encoders", action="store_true",
                        help="fix every encoder after the unimodal pre-training and train the "
                             "fusion stage's head on their cached outputs (ConFEDE keeps its "
                             "text encoder fixed in the fusion stage)")
    parser.add_argument("--rebuild-every", type=int, default=None,
                        help="--objective confede only: epochs between the sampler's rebuilds "
                             "(default 2, ConFEDE's MOSI setting)")
    parser.add_argument("--no-msc", action="store_true", help="ablation: drop L_MSC")
    parser.add_argument("--no-cl", action="store_true", help="ablation: drop L_CL")
    parser.add_argument("--no-gdwg", action="store_true",
                        help="ablation: fixed equal weights for Uni and CL (= --weighting equal)")
    parser.add_argument("--weighting", default=None, choices=("gdwg", "equal", "uncertainty"),
                        help="weights of Uni and CL: GDWG (the paper), fixed equal weights "
                             "(Table 5's w/o GDWG), or homoscedastic uncertainty weighting "
                             "(Kendall et al., 2018: learned log-variances s_k, exp(-s_k) L_k + "
                             "s_k, trained at the fusion head lr without weight decay) "
                             "(default: the config's, gdwg)")
    parser.add_argument("--cl-detach-anchor", action="store_true",
                        help="stop the gradient of L_CL at its anchor T_s: only the positives "
                             "and negatives move (needs A or V: on text-only data it changes "
                             "nothing)")
    parser.add_argument("--cl-warmup", type=int, default=None, metavar="K",
                        help="ramp lambda_CL linearly from 0 over the first K GDWG stages "
                             "(epochs): factor (t-1)/K in stage t <= K, then 1; 0: off "
                             "(default: the config's, 0)")
    parser.add_argument("--cl-label-positives", action="store_true",
                        help="label-aware positives: the other clips of the batch in the "
                             "anchor's coarse (MSC) class are positives of its T_s too, added to "
                             "the text-anchored term. Needs only T_s: on text-only data CL stays "
                             "on with this term alone")
    parser.add_argument("--cl-temperature", type=float, default=None,
                        help="temperature of the Multi NT-Xent loss (default: the config's, 0.5)")
    parser.add_argument("--cl-form", default=None, choices=("in", "out"),
                        help="Multi NT-Xent form: the paper's L_in or SupCon's L_out "
                             "(default: the config's, 'in')")
    parser.add_argument("--weight-scale", default=None, choices=("sum_one", "num_tasks"),
                        help="scale of the Uni/CL weights: the paper's (sum to one) or DWA's "
                             "(sum to the number of weighted tasks) (default: the config's)")


def _add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    """Seeds, epochs, learning rate, batch size, dropout."""
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="one run per seed, mean and std reported (default: the config's)")
    parser.add_argument("--epochs", type=int, default=None, help="fusion epochs")
    parser.add_argument("--lr", type=float, default=None, help="fusion learning rate")
    parser.add_argument("--batch-size", type=int, default=None, help="fusion (global) batch size")
    parser.add_argument("--dropout", type=float, default=None,
                        help="override every dropout rate of the model (encoders and projectors)")
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="epochs of every unimodal pre-training stage")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """How the run is executed: device, outputs, checkpoints, workers, testing aids."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="cuda trains with bf16 autocast")
    parser.add_argument("--constrain-prediction", action="store_true",
                        help="also evaluate with binning.constrain (Fig. 6's restricted scope)")
    parser.add_argument("--out", type=Path, default=Path("runs/dmmsa"))
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/seed*/checkpoint.pt (finished seeds are kept)")
    parser.add_argument("--keep-checkpoint", action="store_true",
                        help="keep OUT/seed*/checkpoint.pt after the seed has finished (by "
                             "default it is deleted then: the seed's result.json, "
                             "pretrained.pt and model_best.pt stay, and --resume reads a "
                             "finished seed back from result.json)")
    parser.add_argument("--save-every", type=int, default=1000,
                        help="also checkpoint every N optimiser steps (0: epoch ends only)")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per process (default: 1 for the synthetic config, "
                             "whose tiny layers run slower with more; else torch's default)")
    parser.add_argument("--limit-batches", type=int, default=None,
                        help="at most N training batches per epoch (quick checks)")
    parser.add_argument("--feature-cache", type=Path, default=None, metavar="DIR",
                        help="with --freeze-encoders: the folder of the cached encoder outputs "
                             "(default: the seed's folder); runs from the same pre-trained "
                             "encoders can share one (compare does)")
    parser.add_argument("--no-feature-cache", action="store_true",
                        help="with --freeze-encoders: run the fixed encoders at every step "
                             "instead of caching their outputs (the same results, for an A/B)")
    parser.add_argument("--inject-nan", type=int, default=None, metavar="STEP",
                        help="testing aid: make the fused prediction NaN at this fusion step")


def _check_objective(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.text_model is not None and args.text_source == "features":
        parser.error("--text-model needs --text-source bert")
    if args.objective != "dmmsa" and (args.no_msc or args.no_cl or args.no_gdwg):
        parser.error(f"--no-msc/--no-cl/--no-gdwg are ablations of --objective dmmsa, not "
                     f"of --objective {args.objective}")
    confede = [flag for flag, value in (("--confede-sampler", args.confede_sampler),
                                        ("--rebuild-every", args.rebuild_every))
               if value is not None]
    if confede and args.objective != "confede":
        parser.error(f"{'/'.join(confede)} set ConFEDE's sample selector; they apply to "
                     f"--objective confede only, got --objective {args.objective}")
    if args.feature_cache is not None and (not args.freeze_encoders or args.no_feature_cache):
        parser.error("--feature-cache applies to --freeze-encoders with the cache on")
    if args.feature_cache is not None and args.feature_cache.exists() \
            and not args.feature_cache.is_dir():
        parser.error(f"--feature-cache {args.feature_cache}: is a file; expected a folder")
    if args.no_feature_cache and not args.freeze_encoders:
        parser.error("--no-feature-cache applies to --freeze-encoders (only fixed encoders' "
                     "outputs are cached)")
    if args.rebuild_every is not None and args.rebuild_every < 1:
        parser.error(f"--rebuild-every must be an int >= 1 (epochs), got {args.rebuild_every}")
    cl_options = [flag for flag, value in (("--cl-detach-anchor", args.cl_detach_anchor or None),
                                           ("--cl-warmup", args.cl_warmup),
                                           ("--cl-label-positives",
                                            args.cl_label_positives or None))
                  if value is not None]
    knobs = [flag for flag, value in (("--cl-temperature", args.cl_temperature),
                                      ("--cl-form", args.cl_form),
                                      ("--weight-scale", args.weight_scale),
                                      ("--weighting", args.weighting)) if value is not None]
    if args.objective != "dmmsa" and knobs + cl_options:
        parser.error(f"{'/'.join(knobs + cl_options)} set the DMMSA objective; they do not "
                     f"apply to --objective {args.objective}")
    if args.no_cl and cl_options:
        parser.error(f"{'/'.join(cl_options)} change the contrastive task, which --no-cl drops; "
                     "use one or the other")
    if args.no_gdwg and args.weighting not in (None, "equal"):
        parser.error(f"--no-gdwg is --weighting equal; it contradicts --weighting "
                     f"{args.weighting}")
    if args.cl_warmup is not None and args.cl_warmup < 0:
        parser.error(f"--cl-warmup must be an int >= 0 (stages; 0: off), got {args.cl_warmup}")
    if args.dataset not in (None, "auto") and args.config == "synthetic":
        parser.error(f"--dataset {args.dataset}: the synthetic data is MOSI-like; --dataset "
                     "is for real data (--config text, or another preset)")
    if args.generate_synthetic and args.config != "synthetic":
        parser.error("--generate-synthetic writes the synthetic data; it needs --config "
                     f"synthetic, got --config {args.config}")
    if args.cl_temperature is not None and not (math.isfinite(args.cl_temperature)
                                                and args.cl_temperature > 0):
        parser.error(f"--cl-temperature must be a finite number > 0, got {args.cl_temperature}")
    if args.cl_temperature is not None:
        _check_temperature(parser, args.cl_temperature)


def _check_temperature(parser: argparse.ArgumentParser, temperature: float) -> None:
    """The library's own limits on the temperature, for the float32 computation of training."""
    import torch

    import mtobjectives as mt

    try:
        mt.functional.multi_nt_xent(torch.ones(1, 2), torch.ones(1, 1, 2),
                                    torch.ones(1, 1, dtype=torch.bool), temperature=temperature)
    except ValueError as error:
        parser.error(f"--cl-temperature {temperature}: {error}")


def _check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.modalities is not None:
        wanted = args.modalities.upper()
        if not wanted or any(m not in "TAV" for m in wanted) or len(set(wanted)) != len(wanted):
            parser.error(f"--modalities must be a subset of TAV, got {args.modalities!r}")
        args.modalities = "".join(m for m in "TAV" if m in wanted)
    for name in ("epochs", "batch_size", "pretrain_epochs", "limit_batches", "save_every",
                 "num_workers", "threads"):
        value = getattr(args, name)
        minimum = 0 if name in ("save_every", "num_workers") else 1
        if value is not None and value < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        twice = sorted({seed for seed in args.seeds if args.seeds.count(seed) > 1})
        parser.error(f"--seeds must be distinct (each seed is one run of the mean ± std), got "
                     f"{' '.join(map(str, args.seeds))} ({', '.join(map(str, twice))} repeated)")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a finite number > 0, got {args.lr}")
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments of ``train.py`` (``--help`` lists them), checked; exits on a bad one."""
    parser = argparse.ArgumentParser(
        description="Train DMMSA (ConFEDE's model + the DMMSA objective) in two stages.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for add in (_add_what_arguments, _add_objective_arguments, _add_schedule_arguments,
                _add_run_arguments):
        add(parser)
    args = parser.parse_args(argv)
    _check_objective(parser, args)
    _check_numbers(parser, args)
    return args


def data_path(args: argparse.Namespace) -> Path:
    """The feature file: ``--data``, or the synthetic default's ``OUT/data/synthetic.pkl``."""
    if args.data is not None:
        return args.data
    if args.config != "synthetic":
        raise SystemExit(f"--data is required for --config {args.config} (an MMSA pickle)")
    return args.out / "data" / "synthetic.pkl"


def generates_synthetic(args: argparse.Namespace) -> bool:
    """Whether the synthetic data is to be written: it is missing from the default location (or
    from ``--data`` with ``--generate-synthetic``).

    Raises:
        SystemExit: ``--data`` names a missing file for the synthetic config without
            ``--generate-synthetic`` (a mistyped real file would otherwise train on synthetic
            data).
    """
    path = data_path(args)
    if args.config != "synthetic" or path.exists():
        return False
    if args.data is not None and not args.generate_synthetic:
        raise SystemExit(f"--data {path}: no such file. The synthetic data is generated only "
                         "into OUT/data/synthetic.pkl (leave --data out), or into --data with "
                         "--generate-synthetic")
    return True


def _apply_arguments(config: configs.ExperimentConfig, args: argparse.Namespace) -> None:
    """The command line's overrides, in place, on a fresh preset."""
    model, fusion, objective = config.model, config.train.fusion, config.train.objective
    if args.text_source is not None:
        model.text_source = args.text_source
    if args.text_model is not None:
        model.text_source, model.text_model = "bert", args.text_model
    if args.modalities is not None:
        model.modalities = tuple(args.modalities)
    fusion.epochs = fusion.epochs if args.epochs is None else args.epochs
    fusion.lr = fusion.lr if args.lr is None else args.lr
    fusion.batch_size = fusion.batch_size if args.batch_size is None else args.batch_size
    if args.dropout is not None:
        model.encoder_dropout = model.head_dropout = args.dropout
    if args.pretrain_epochs is not None:
        for stage in config.train.pretrain.values():
            stage.epochs = args.pretrain_epochs
    objective.msc = objective.msc and not args.no_msc
    objective.cl = objective.cl and not args.no_cl
    if args.no_gdwg:
        objective.weighting = "equal"
    for name, value in (("temperature", args.cl_temperature), ("form", args.cl_form),
                        ("scale", args.weight_scale), ("weighting", args.weighting),
                        ("cl_warmup", args.cl_warmup)):
        if value is not None:
            setattr(objective, name, value)
    objective.detach_anchor = objective.detach_anchor or args.cl_detach_anchor
    objective.label_positives = objective.label_positives or args.cl_label_positives
    if args.confede_sampler is not None:
        objective.confede_sampler = args.confede_sampler
    if args.rebuild_every is not None:
        objective.confede_rebuild_every = args.rebuild_every
    if args.seeds is not None:
        config.train.seeds = tuple(args.seeds)


def load_range(args: argparse.Namespace) -> tuple[float, float]:
    """The label range the file is checked against when it is loaded: the ``--dataset``'s, the
    widest (``[-3, 3]``) when the dataset is decided from the data, else the preset's."""
    dataset = args.dataset or configs.get_config(args.config).dataset
    return DATASET_RANGES.get(dataset, (-3.0, 3.0))


def _decide_dataset(config: configs.ExperimentConfig, args: argparse.Namespace,
                    facts: data.DataFacts, log: Callable[[str], None]) -> None:
    """``--dataset`` (or the preset's ``"auto"``): the dataset kind, in place; logs a decision."""
    wanted = args.dataset or config.dataset
    if wanted == "auto":
        if facts.label_bound is None:
            raise ValueError("--dataset auto needs the data's label_bound (data.facts_of)")
        wanted, why = decide_dataset(facts.label_bound, facts.clips)
        unimodal = (f"; unimodal labels {'/'.join(facts.unimodal_labels)}"
                    if facts.unimodal_labels else "")
        log(f"dataset: {wanted} (bins and metrics), decided from the data: {why}{unimodal}; "
            "--dataset mosi|mosei|sims overrides it")
    config.dataset = wanted
    config.label_range = DATASET_RANGES[wanted]


def _check_data_holds(config: configs.ExperimentConfig, args: argparse.Namespace,
                      facts: data.DataFacts) -> None:
    """Refuse settings that need what the file lacks (a modality asked for, the text input)."""
    if args.modalities is not None:
        missing = [m for m in args.modalities if m not in facts.modalities]
        if missing:
            raise SystemExit(f"train.py: error: --modalities {args.modalities}: the data holds "
                             f"{''.join(facts.modalities)}, without {''.join(missing)}; name "
                             "a subset of what it holds")
    source = config.model.text_source
    needed = "text" if source == "features" else "text_bert"
    if needed not in facts.text_keys:
        fix = ("--text-source bert --text-model FOLDER" if source == "features"
               else "--text-source features")
        raise SystemExit(f"train.py: error: --data: the text input of --config {args.config} "
                         f"(text source {source!r}) is the key {needed!r}, which the data lacks "
                         f"(it holds {list(facts.text_keys)}); use {fix}")


def check_text_model(config: configs.RunConfig, facts: data.DataFacts) -> None:
    """Refuse, before any training, a text model that cannot be loaded here or whose positions
    are fewer than the data's tokens per clip (``text_bert``'s ``L``)."""
    model = config.experiment.model
    if model.text_source != "bert" or "T" not in model.modalities:
        return
    from transformers import AutoConfig

    try:
        found = AutoConfig.from_pretrained(model.text_model)
    except (OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise SystemExit(f"train.py: error: --text-model {model.text_model}: cannot be loaded "
                         f"({type(error).__name__}: {first}); pass a local model folder "
                         "(--text-model FOLDER)") from None
    positions = getattr(found, "max_position_embeddings", None)
    if positions is not None and facts.text_length is not None and facts.text_length > positions:
        raise SystemExit(f"train.py: error: --text-model {model.text_model}: it has "
                         f"{positions} positions, fewer than the {facts.text_length} tokens per "
                         "clip of the data's text_bert; prepare the data with a smaller "
                         "--max-text-len")


def _switch_cl(config: configs.ExperimentConfig, args: argparse.Namespace,
               log: Callable[[str], None]) -> None:
    """CL off where the modalities give it nothing to contrast (logged once, for a fusion)."""
    objective, modalities = config.train.objective, config.model.modalities
    if not objective.cl or has_text_anchored_pair([f"{m}_s" for m in modalities]):
        return
    applies = args.stage != "pretrain" and args.objective == "dmmsa"
    if objective.label_positives and "T" in modalities:
        if applies:
            log(f"modalities {''.join(modalities)}: no text-anchored positive pair; the "
                "contrastive task (CL) keeps only its label-aware term (--cl-label-positives)")
        return
    if applies:
        log(f"modalities {''.join(modalities)}: no text-anchored positive pair, so the "
            "contrastive task (CL) is switched off")
    objective.cl = False


def resolve_config(args: argparse.Namespace, facts: data.DataFacts,
                   path: Path | None = None,
                   log: Callable[[str], None] | None = print) -> configs.RunConfig:
    """The run's final configuration, frozen: the preset, the arguments, the data's facts.

    The model reads the file's feature widths and keeps only the modalities the file has; the
    contrastive task is switched off (logged once, when a fusion stage is trained) when they
    hold no text-anchored positive pair (Eq. 11 needs ``T`` and ``A`` or ``V``), unless
    ``--cl-label-positives`` gives it a term that needs ``T`` alone. The dataset kind (bins,
    metrics) is ``--dataset``'s, the preset's, or decided from the data (``"auto"``, logged).

    Args:
        args: from :func:`parse_args`.
        facts: ``data.facts_of`` of the loaded file.
        path: the feature file (default: :func:`data_path`).
        log: where the decisions are written (``None``: nowhere, e.g. on ranks other than 0).
    """
    say = log if log is not None else (lambda message: None)
    config = configs.get_config(args.config)
    _apply_arguments(config, args)
    _check_data_holds(config, args, facts)
    if config.train.selection_metric != "MAE":
        raise ValueError("this script selects on the validation MAE (lower is better); got "
                         f"selection_metric={config.train.selection_metric!r}")
    _decide_dataset(config, args, facts, say)
    dims = facts.feature_dims
    text_dim = dims["T"] if config.model.text_source == "features" else None
    config = configs.with_input_dims(config, text=text_dim, audio=dims["A"], vision=dims["V"],
                                     available=facts.modalities)
    _switch_cl(config, args, say)
    phases = [f"pretrain_{m}" for m in config.model.modalities] if args.stage != "fusion" else []
    phases += ["fusion"] if args.stage != "pretrain" else []
    path = Path(path if path is not None else data_path(args))
    return configs.freeze(configs.RunConfig(
        experiment=config, data=str(path.resolve()),
        data_sha256=data.file_digest(path) if path.is_file() else "",
        objective=args.objective, stage=args.stage, phases=tuple(phases),
        limit_batches=args.limit_batches, inject_nan=args.inject_nan,
        constrain_prediction=args.constrain_prediction, freeze_encoders=args.freeze_encoders))
