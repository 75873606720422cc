"""The ``interp-toolkit`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from interp_toolkit import cli
from interp_toolkit.models.registry import OFFLINE_MODELS


def test_models_lists_offline_models(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for name in OFFLINE_MODELS:
        assert name in out
    assert "installed" in out and "cached" in out and "tiny-random" in out


def test_models_json(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_TOOLKIT_CACHE", str(tmp_path))
    assert cli.main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cache_root"] == str(tmp_path)
    rows = {r["name"]: r for r in data["models"]}
    assert set(rows) == set(OFFLINE_MODELS)
    assert all(r["cached"] is False for r in rows.values())  # fresh cache
    assert rows["smollm2-135m"]["default"] is True


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert "models" in out and "generate" in out


def test_generate_tiny(capsys):
    assert cli.main(["generate", "hello", "--model", "tiny-random-llama", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hello")


def test_generate_unknown_model_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert cli.main(["generate", "x", "--model", "no-such/model"]) == 1
    err = capsys.readouterr().err
    assert "no-such/model" in err and "smollm2-135m" in err


def test_generate_rejects_negative_length(capsys):
    assert cli.main(["generate", "x", "-n", "-1", "-m", "tiny-random"]) == 2


@pytest.mark.real
def test_generate_real_model(smollm2, capsys, monkeypatch):
    monkeypatch.setattr(cli, "model_from_args", lambda args: smollm2)  # reuse the session's model
    assert cli.main(["generate", "The capital of France is", "-n", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The capital of France is") and "Paris" in out


def test_register_subcommand(monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMANDS", dict(cli.SUBCOMMANDS))
    calls = []

    def add_arguments(parser):
        parser.add_argument("--times", type=int, default=1)

    def run(args):
        calls.append(args.times)
        print("ran")
        return 3

    cli.register("echo-test", add_arguments, run, help="a test command")
    assert cli.main(["echo-test", "--times", "2"]) == 3
    assert calls == [2] and "ran" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert "echo-test" in capsys.readouterr().out


def test_command_modules_missing_or_broken_raise(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("interp_toolkit.no_such_package.cli",))
    with pytest.raises(ModuleNotFoundError, match="no_such_package"):
        cli.build_parser()  # nothing is listed that does not exist
    (tmp_path / "broken_cmds.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("broken_cmds",))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        cli.build_parser()


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "interp_toolkit.cli", "models"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "smollm2-135m" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "interp_toolkit.cli", "--help"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("trace", "trace-dataset", "interactions", "geometry", "lens", "sweep", "analyze"):
        assert name in proc.stdout


SHARED_OPTIONS = ("--model", "--out", "--json", "--device", "--dtype", "--backend", "--max-batch-tokens")
ANALYSES = ("trace", "trace-dataset", "interactions", "geometry", "lens", "sweep", "analyze", "circuit")


@pytest.mark.parametrize("name", ANALYSES)
def test_every_analysis_takes_the_shared_options(name):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[name]
    flags = {f for a in sub._actions for f in a.option_strings}
    assert set(SHARED_OPTIONS) <= flags
    assert set(ANALYSES) | {"models", "generate"} == set(cli.SUBCOMMANDS)


def test_several_models_and_deprecated_spellings(monkeypatch):
    loaded = []
    monkeypatch.setattr("interp_toolkit.models.load_model", lambda name, **kw: loaded.append((name, kw)) or name)
    args = cli.build_parser().parse_args(["interactions", "p", "--models", "a, b", "--html", "r.html",
                                          "--dtype", "bfloat16", "--backend", "bridge"])
    assert args.out == "r.html" and cli.models_from_args(args) == ["a", "b"]
    assert [kw["dtype"] for _, kw in loaded] == ["bfloat16"] * 2 and loaded[0][1]["backend"] == "bridge"
    args = cli.build_parser().parse_args(["interactions", "p", "--model", " ,"])
    with pytest.raises(ValueError, match="empty"):
        cli.models_from_args(args)
