"""The ``dmmsa`` package: its stated public surface, and a configuration resolved once, frozen.

``cli.resolve_config`` is the one place that turns the arguments and the data's facts into the
run's configuration; the fingerprint that ``--resume`` compares is derived from that
configuration, so every setting that changes what is trained is in it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import subprocess
from pathlib import Path

import pytest

import dmmsa
from dmmsa import cli, configs, data

FULL = data.DataFacts({"T": 32, "A": 5, "V": 20}, ("T", "A", "V"), ("T", "A", "V"))
TEXT_ONLY = data.DataFacts({"T": 32, "A": None, "V": None}, ("T",), ())


@pytest.mark.parametrize("name", [*dmmsa.__all__, "train", "evaluate_real", "compare",
                                  "compare_tables", "text_alone"])
def test_every_module_states_its_public_names(name: str) -> None:
    module = importlib.import_module(f"dmmsa.{name}")
    assert module.__all__, name
    missing = [item for item in module.__all__ if not hasattr(module, item)]
    assert not missing, (name, missing)


def test_the_resolved_configuration_is_frozen_and_the_preset_untouched() -> None:
    config = cli.resolve_config(cli.parse_args(["--epochs", "3"]), FULL, "d.pkl")
    with pytest.raises(dataclasses.FrozenInstanceError, match="frozen"):
        config.experiment.train.fusion.epochs = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.experiment.train.pretrain["T"].lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.objective = "baseline"
    assert config.experiment.train.fusion.epochs == 3
    assert configs.get_config("synthetic").train.fusion.epochs == 20  # a fresh preset


def test_the_data_facts_set_the_widths_modalities_and_switch_cl_off() -> None:
    said: list[str] = []
    config = cli.resolve_config(cli.parse_args([]), TEXT_ONLY, "d.pkl", log=said.append)
    assert len(said) == 1 and "contrastive task (CL) is switched off" in said[0]
    assert config.experiment.model.modalities == ("T",)
    assert config.experiment.model.text_dim == 32
    assert not config.experiment.train.objective.cl
    assert config.phases == ("pretrain_T", "fusion")
    wide = dataclasses.replace(FULL, feature_dims={"T": 48, "A": 7, "V": 9})
    model = cli.resolve_config(cli.parse_args(["--stage", "fusion"]), wide, "d").experiment.model
    assert (model.text_dim, model.audio_dim, model.vision_dim) == (48, 7, 9)


@pytest.mark.parametrize("argv", [
    ["--cl-temperature", "0.25"], ["--cl-form", "out"], ["--weight-scale", "num_tasks"],
    ["--no-msc"], ["--no-gdwg"], ["--epochs", "3"], ["--lr", "0.1"], ["--dropout", "0.2"],
    ["--pretrain-epochs", "2"], ["--modalities", "TA"], ["--objective", "baseline"],
    ["--cl-detach-anchor"], ["--cl-warmup", "3"], ["--cl-label-positives"],
    ["--weighting", "uncertainty"], ["--weighting", "equal"],
    ["--stage", "fusion"], ["--limit-batches", "2"], ["--text-model", "some/bert"],
])
def test_every_training_argument_changes_the_fingerprint(argv: list[str]) -> None:
    before = configs.fingerprint(cli.resolve_config(cli.parse_args([]), FULL, "d.pkl"))
    after = configs.fingerprint(cli.resolve_config(cli.parse_args(argv), FULL, "d.pkl"))
    assert before != after, argv


@pytest.mark.parametrize("argv", [["--seeds", "1", "2"], ["--save-every", "5"],
                                  ["--keep-checkpoint"], ["--weighting", "gdwg"],
                                  ["--cl-warmup", "0"],
                                  ["--threads", "2"], ["--resume"], ["--out", "elsewhere"]])
def test_how_a_run_is_executed_leaves_the_fingerprint_alone(argv: list[str]) -> None:
    before = configs.fingerprint(cli.resolve_config(cli.parse_args([]), FULL, "d.pkl"))
    after = configs.fingerprint(cli.resolve_config(cli.parse_args(argv), FULL, "d.pkl"))
    assert before == after, argv


def test_the_fingerprint_holds_every_field_of_the_configuration() -> None:
    config = cli.resolve_config(cli.parse_args([]), FULL, "d.pkl")
    names = set(configs.fingerprint(config))

    def leaves(prefix: str, value: object) -> set[str]:
        if dataclasses.is_dataclass(value):
            return {leaf for f in dataclasses.fields(value)
                    for leaf in leaves(f"{prefix}.{f.name}", getattr(value, f.name))}
        if isinstance(value, dict):
            return {leaf for k, v in value.items() for leaf in leaves(f"{prefix}.{k}", v)}
        return {prefix}

    expected = {name[1:] for name in leaves("", config)} - {"experiment.train.seeds"}
    assert names == expected


# ----------------------------------------------------------------- the package's shape
PACKAGE = Path(dmmsa.__file__).resolve().parent


def dmmsa_imports(path: Path) -> set[str]:
    """Every ``dmmsa`` module that ``path`` imports, wherever the import stands (top level,
    inside a function, under ``TYPE_CHECKING``)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == \
                "dmmsa":
            if node.module == "dmmsa":
                found |= {alias.name for alias in node.names if alias.name in modules}
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names
                      if alias.name.startswith("dmmsa.")}
    return found - {path.stem}


def test_no_module_of_the_reference_system_imports_itself_back() -> None:
    """Every arrow between the modules points one way (no import circle, however indirect)."""
    graph = {p.stem: dmmsa_imports(p) for p in PACKAGE.glob("*.py")}
    assert graph["checkpoint"] and graph["compare_tables"]  # the parser sees the imports
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import circle: {' -> '.join([*path, module])}"
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_no_file_of_the_repository_edits_the_import_path() -> None:
    root = PACKAGE.parents[1]
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.split()
    editing = [name for name in tracked if "sys" + ".path" in (root / name).read_text()]
    assert editing == []


@pytest.mark.parametrize("name", ["data", "configs", "cli", "training", "compare",
                                  "compare_tables", "prepare_steps", "prepare_audio"])
def test_modules_stay_under_the_size_guide(name: str) -> None:
    lines = (PACKAGE / f"{name}.py").read_text().count("\n")
    assert lines <= 500, f"dmmsa/{name}.py has {lines} lines (guide: about 500)"
