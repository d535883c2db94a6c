"""slipway.spec.package: parsing slipway.yaml into a PackageSpec or a SpecError naming every problem."""

from __future__ import annotations

import pytest

from slipway.errors import SpecError
from slipway.spec.package import (
    PackageSpec, check_package_files, parse_duration, parse_memory, parse_package,
)


def problems_of(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        parse_package(text, source="pkg/slipway.yaml")
    return caught.value.message


def test_minimal_custom_package_gets_defaults():
    spec = parse_package("name: echo\nkind: custom\n")
    assert spec.name == "echo" and spec.kind == "custom"
    assert spec.engine is None and spec.weights is None
    assert spec.autoscaling.min_replica == 1 and spec.autoscaling.max_replica == 1
    assert spec.resources.memory_bytes == 2 * 2**30
    assert spec.routing == "least_load" and spec.capture is False


def test_full_llm_package_parses_durations_and_memory():
    spec = parse_package(
        "name: support-bot\nkind: llm\nweights: ./weights\n"
        "resources: {cpu: 2, memory: 512Mi, accelerator: 'H100:1'}\n"
        "autoscaling: {min_replica: 0, max_replica: 3, autoscaling_window: 2m, scale_down_delay: 250ms}\n"
        "routing: prefix_aware\nruntime: {max_model_len: 4096}\n"
    )
    assert spec.engine == "builtin"  # llm defaults to the built-in engine
    assert spec.resources.memory_bytes == 512 * 2**20
    assert spec.autoscaling.autoscaling_window == 120.0
    assert spec.autoscaling.scale_down_delay == 0.25
    assert spec.runtime.max_model_len == 4096


def test_malformed_yaml_names_the_line():
    message = problems_of("name: x\n  kind: custom\n")
    assert message.startswith("pkg/slipway.yaml: not valid YAML at line 2, column 7"), message
    assert "fix the syntax" in message


def test_tab_indentation_names_its_line():
    assert "at line 3, column 1" in problems_of("name: x\nkind: custom\n\tbad: 1\n")


def test_malformed_yaml_line_points_at_the_broken_line():
    message = problems_of("name: x\nkind: [custom\n")
    assert "at line 3" in message, message  # the flow sequence is still open at the end of input


def test_top_level_must_be_a_mapping():
    assert "expected a mapping" in problems_of("- just\n- a list\n")


def test_every_invalid_field_is_named_at_once():
    message = problems_of(
        "name: Bad_Name\nkind: custom\nrouting: fastest\n"
        "resources: {cpu: 0, memory: lots, accelerator: 'H100 x2'}\n"
        "autoscaling: {concurrency_target: 0, target_utilization_percentage: 101, autoscaling_window: soon}\n"
    )
    for field in ("name:", "routing:", "resources.cpu:", "resources.memory:", "resources.accelerator:",
                  "autoscaling.concurrency_target:", "autoscaling.target_utilization_percentage:",
                  "autoscaling.autoscaling_window:"):
        assert field in message, f"{field} missing from:\n{message}"
    assert "lowercase letters, digits and dashes" in message
    assert "'512Mi' or '2Gi'" in message


def test_unknown_field_is_named_with_the_fix():
    message = problems_of("name: x\nkind: custom\nreplicas: 3\n")
    assert "replicas: unknown field; remove it or check its spelling" in message


def test_unknown_nested_field_is_named_with_its_path():
    assert "autoscaling.max_replicas: unknown field" in problems_of(
        "name: x\nkind: custom\nautoscaling: {max_replicas: 3}\n")


def test_missing_required_fields():
    message = problems_of("description: nothing else\n")
    assert "name: required field is missing" in message
    assert "kind: required field is missing" in message


def test_min_replica_above_max_replica():
    message = problems_of("name: x\nkind: custom\nautoscaling: {min_replica: 4, max_replica: 2}\n")
    assert "min_replica (4) is greater than max_replica (2)" in message
    assert "raise max_replica or lower min_replica" in message


def test_llm_without_weights():
    assert "kind 'llm' needs 'weights'" in problems_of("name: x\nkind: llm\n")


def test_embedding_without_weights():
    assert "kind 'embedding' needs 'weights'" in problems_of("name: x\nkind: embedding\n")


def test_engine_and_adapters_only_for_llm():
    assert "'engine' applies to kind 'llm' only" in problems_of("name: x\nkind: custom\nengine: vllm\n")
    assert "'adapters' apply to kind 'llm' only" in problems_of(
        "name: x\nkind: embedding\nweights: w\nadapters: {a: ./a}\n")


def test_custom_without_model_py_is_refused_by_the_file_check():
    spec = parse_package("name: x\nkind: custom\n")
    with pytest.raises(SpecError) as caught:
        check_package_files(spec, {"slipway.yaml", "README.md"}, source="pkg")
    assert "model.py" in caught.value.message and "class Model" in caught.value.message
    check_package_files(spec, {"slipway.yaml", "model.py"}, source="pkg")  # present: no error


def test_embedding_needs_no_model_py():
    spec = parse_package("name: x\nkind: embedding\nweights: ./w\n")
    check_package_files(spec, {"slipway.yaml"}, source="pkg")


@pytest.mark.parametrize("text, seconds", [(90, 90.0), ("90", 90.0), ("90s", 90.0), ("1.5m", 90.0),
                                           ("250ms", 0.25), ("1h", 3600.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 minutes", True, None])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text, size", [("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9), (1024, 1024)])
def test_parse_memory(text, size):
    assert parse_memory(text) == size


def test_spec_round_trips_through_a_dict():
    spec = parse_package("name: echo\nkind: custom\nautoscaling: {max_replica: 3}\n")
    assert PackageSpec.model_validate(spec.model_dump()) == spec
