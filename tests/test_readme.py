from pathlib import Path

from attnseg.phantom import write_phantom_dataset

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash")
    block = lines[start + 1 : lines.index("```", start + 1)]
    return [line for line in block if line and not line.startswith("#")]


def test_readme_starts_with_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].startswith("python -m pip install -r requirements-ci.txt")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci


def test_ci_pins_cpu_torch():
    assert "torch==2.13.0" in (ROOT / "requirements-ci.txt").read_text()


def _python_block(section: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index(section)) + len("```python\n")
    return text[start : text.index("```", start)]


def test_readme_training_patches_example_runs(tmp_path, monkeypatch):
    code = _python_block("## Demo data and training patches")
    assert "micro_batches=125" in code and "num_workers=2" in code
    code = code.replace("micro_batches=125", "micro_batches=1").replace("num_workers=2", "num_workers=0")
    write_phantom_dataset(tmp_path / "OUT", 4, seed=0)  # what `attnseg demo-data OUT --cases 4` writes
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert tuple(scope["image"].shape) == (2, 4, 64, 64, 48)
    assert tuple(scope["label"].shape) == (2, 64, 64, 48)
    assert scope["store"][3].spacing_mm == (2.0, 2.0, 2.0) and scope["store"][3].shape == (80, 80, 60)
    assert scope["store"].cache.stats["misses"] == 4  # each case decoded and preprocessed once
    params = scope["patches"].params_for((3, 0, 7, (64, 64, 48)))
    assert params.to_dict() == scope["params"].to_dict()
