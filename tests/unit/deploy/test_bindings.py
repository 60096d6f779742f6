from pathlib import Path

import pytest

from modelloop.contract.errors import ConfigError
from modelloop.deploy.bindings import load_bindings, parse_bindings


def test_defaults_and_full_binding() -> None:
    [plain, full] = parse_bindings(
        {
            "bindings": [
                {"name": "a", "model": "m"},
                {
                    "name": "b",
                    "model": "m",
                    "challenger": {"mode": "canary", "share": 0.2},
                    "target": "kubernetes",
                    "autoscaling": {"min": 2, "max": 5, "cpu_target": 60},
                    "namespace": "ml",
                },
            ]
        }
    )
    assert plain.alias == "production" and plain.target == "local" and plain.challenger is None
    assert plain.champion_stage == "Production" and plain.challenger_stage == "Staging"
    assert full.challenger is not None and full.challenger.alias == "challenger"
    assert full.challenger.share == 0.2 and full.autoscaling is not None and full.autoscaling.max == 5


@pytest.mark.parametrize(
    ("binding", "field"),
    [
        ({"name": "Bad_Name", "model": "m"}, "bindings.0.name"),
        ({"name": "a", "model": "m", "target": "cloud"}, "bindings.0.target"),
        (
            {"name": "a", "model": "m", "challenger": {"mode": "canary", "share": 1.5}},
            "bindings.0.challenger.share",
        ),
        ({"name": "a", "model": "m", "autoscaling": {"min": 4, "max": 2}}, "bindings.0.autoscaling"),
        (
            {"name": "a", "model": "m", "resources": {"requests": {"cpu": "lots"}}},
            "bindings.0.resources.requests",
        ),
        ({"name": "a", "model": "m", "replica": 2}, "bindings.0.replica"),
        ({"name": "a"}, "bindings.0.model"),
    ],
)
def test_bad_field_is_named_and_not_echoed(binding: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_bindings({"bindings": [binding]})
    assert field in str(info.value)
    assert "lots" not in str(info.value) and "cloud" not in str(info.value)


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_bindings({"bindings": [{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]})


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bindings file .*missing\.yaml does not exist"):
        load_bindings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("bindings: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+\)"):
        load_bindings(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- {name: a, model: m}\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_bindings(listed)
    good = tmp_path / "good.yaml"
    good.write_text("bindings:\n  - {name: a, model: m}\n")
    assert load_bindings(good)[0].model == "m"
