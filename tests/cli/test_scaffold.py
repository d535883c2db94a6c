"""slipway.cli.scaffold: `slipway init` writes packages that deploy as is."""

from __future__ import annotations

import pytest

from slipway.errors import ConflictError, SpecError
from slipway.cli.scaffold import scaffold_package
from slipway.runtimes import create_runtime, resolve_weights
from slipway.spec.package import check_package_files, parse_package


def read_back(folder):
    spec = parse_package((folder / "slipway.yaml").read_text(), source=str(folder / "slipway.yaml"))
    check_package_files(spec, {p.name for p in folder.iterdir()}, source=str(folder))
    return spec


@pytest.mark.parametrize("kind", ["custom", "embedding", "llm"])
def test_each_kind_writes_a_valid_package_named_as_asked(tmp_path, kind):
    folder = scaffold_package("my-model", kind, tmp_path / "my-model")
    spec = read_back(folder)
    assert spec.name == "my-model" and spec.kind == kind
    assert "my-model" in (folder / "README.md").read_text()
    assert not any(p.name.endswith(".tmpl") for p in folder.iterdir())
    assert "{{" not in "".join(p.read_text() for p in folder.iterdir())


def test_every_field_is_written_with_a_comment(tmp_path):
    text = (scaffold_package("commented", "llm", tmp_path / "c") / "slipway.yaml").read_text()
    for field in ("name:", "kind:", "engine:", "weights:", "adapters:", "cpu:", "memory:", "accelerator:",
                  "min_replica:", "max_replica:", "concurrency_target:", "target_utilization_percentage:",
                  "autoscaling_window:", "scale_down_delay:", "routing:", "capture:", "max_model_len:"):
        line = next(line for line in text.splitlines() if line.strip().startswith(field))
        assert "#" in line, f"{field} has no comment"


async def test_custom_package_serves_as_is(tmp_path):
    folder = scaffold_package("hello", "custom", tmp_path / "hello")
    runtime = create_runtime(read_back(folder), folder)
    await runtime.load()
    assert await runtime.predict({"x": 1}) == {"model": "hello", "received": {"x": 1}}
    await runtime.close()


def test_embedding_and_llm_weights_resolve_on_this_machine(tmp_path):
    for kind in ("embedding", "llm"):
        folder = scaffold_package(f"w-{kind}", kind, tmp_path / kind)
        assert resolve_weights(read_back(folder).weights, folder).exists()


def test_an_existing_empty_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    assert (scaffold_package("x", "custom", tmp_path / "empty") / "model.py").is_file()


def test_refuses_to_overwrite_a_non_empty_folder(tmp_path):
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ConflictError, match="already exists and is not an empty folder"):
        scaffold_package("x", "custom", folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConflictError):
        scaffold_package("x", "custom", tmp_path / "file")


@pytest.mark.parametrize("name, suggestion", [("My Model", "my-model"), ("bad_name!", "bad-name"), ("-x", "x")])
def test_invalid_names_are_refused_with_a_suggestion(tmp_path, name, suggestion):
    with pytest.raises(SpecError) as caught:
        scaffold_package(name, "custom", tmp_path / "out")
    assert "lowercase letters, digits and dashes" in caught.value.message
    assert repr(suggestion) in caught.value.message
    assert not (tmp_path / "out").exists()


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(SpecError, match="not a package kind"):
        scaffold_package("x", "tensorflow", tmp_path / "out")  # type: ignore[arg-type]
