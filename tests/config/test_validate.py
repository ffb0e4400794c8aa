from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from fada.config.model import ModelConfig, _f
from fada.config.validate import from_dict, to_dict
from fada.errors import ConfigError


@dataclass
class Inner:
    n: int = _f(1, ge=0, le=10)
    ratio: float = _f(0.5, gt=0.0)


@dataclass
class Outer:
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    sizes: list[int] = _f([1, 2])
    path: Optional[str] = _f(None, path="file")
    inner: Inner = field(default_factory=Inner)

    def check(self):
        return ["sizes: must not be empty"] if not self.sizes else []


def problems_of(data):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data, "r.yaml")
    return e.value.problems


def test_defaults_and_round_trip():
    obj = from_dict(Outer, {"inner": {"n": 3}, "sizes": [4]})
    assert obj.inner.n == 3 and obj.sizes == [4] and obj.inner.ratio == 0.5
    assert from_dict(Outer, to_dict(obj)) == obj


def test_int_accepted_as_float_and_integral_float_as_int():
    obj = from_dict(Outer, {"inner": {"n": 2.0, "ratio": 1}})
    assert obj.inner.n == 2 and isinstance(obj.inner.n, int) and obj.inner.ratio == 1.0


def test_every_problem_is_reported_at_once(tmp_path):
    probs = problems_of({"nmae": "y", "mode": "c", "sizes": [1, "z"], "path": str(tmp_path / "none.txt"),
                         "inner": {"n": 11, "ratio": 0, "extra": 1}})
    text = "\n".join(probs)
    assert "nmae: unknown key (did you mean 'name'?)" in text
    assert "mode: 'c' is not one of a, b" in text
    assert "sizes[1]: expected int" in text
    assert "path: file not found" in text
    assert "inner.n: 11 is out of range (must be <= 10)" in text
    assert "inner.ratio: 0.0 is out of range (must be > 0.0)" in text
    assert "inner.extra: unknown key" in text
    assert len(probs) == 7


def test_bool_is_not_an_int():
    assert "inner.n: expected int, got bool True" in problems_of({"inner": {"n": True}})


def test_cross_field_check_runs_with_type_errors():
    probs = problems_of({"sizes": [], "mode": "zz"})
    assert any(p.startswith("sizes: must not be empty") for p in probs)
    assert any(p.startswith("mode:") for p in probs)


def test_model_config_checks():
    with pytest.raises(ConfigError) as e:
        from_dict(ModelConfig, {"vae": {"kind": "sd"}, "resolution": 36, "vae_extra": 1})
    text = "\n".join(e.value.problems)
    assert "vae.path: required when kind is 'sd'" in text
    assert "resolution: 36 is not a multiple of the VAE downsampling 8" in text
    assert "vae_extra: unknown key" in text


def test_yaml_booleans_map_back_to_string_choices():
    @dataclass
    class M:
        mode: Literal["off", "fixed"] = "fixed"
        precision: Literal["no", "bf16"] = "bf16"

    assert from_dict(M, {"mode": False, "precision": False}) == M("off", "no")
    with pytest.raises(ConfigError):
        from_dict(M, {"mode": True})


@pytest.mark.parametrize("section", ["TeacherConfig", "DistillConfig"])
def test_mouth_box_must_be_a_box(section):
    from fada.config import schema

    cls = getattr(schema, section)
    with pytest.raises(ConfigError) as e:
        from_dict(cls, {"mouth_box": [0.6, 0.5, 0.4, 0.9], "mouth_weight": -1})
    text = "\n".join(e.value.problems)
    assert "mouth_box: needs [x0, y0, x1, y1] with x0 < x1 and y0 < y1" in text
    assert "mouth_weight: -1.0 is out of range" in text
    assert from_dict(cls, {"mouth_box": [0.1, 0.5, 0.4, 0.9]}).mouth_box == [0.1, 0.5, 0.4, 0.9]
    assert cls().mouth_weight == 0.0  # the paper's losses unless a recipe asks


def test_exponent_floats_without_a_dot_are_numbers():
    # YAML 1.1 (PyYAML) reads 1e-4 as a string; a float field takes it as the number everyone means
    obj = from_dict(Inner, {"ratio": "1e-4"})
    assert obj.ratio == 1e-4
    assert from_dict(Inner, {"ratio": "+2E3"}).ratio == 2000.0
    assert "inner.ratio: expected float, got str 'fast'" in problems_of({"inner": {"ratio": "fast"}})


def test_schedule_section_is_checked_as_a_whole():
    from fada.config import load_recipe
    from fada.errors import ConfigError

    m = load_recipe("tiny-teacher", ["model.schedule.prediction_type=v_prediction",
                                     "model.schedule.timestep_spacing=trailing"]).model
    assert m.schedule.build().prediction_type == "v_prediction"
    with pytest.raises(ConfigError, match=r"schedule.*rescale_betas_zero_snr.*v_prediction"):
        load_recipe("tiny-teacher", ["model.schedule.rescale_betas_zero_snr=true"])
    with pytest.raises(ConfigError, match="model.schedule.timestep_spacing"):
        load_recipe("tiny-teacher", ["model.schedule.timestep_spacing=linspace"])
