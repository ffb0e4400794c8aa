import pytest
import yaml

from fada.config import (DistillRecipe, TeacherRecipe, load_recipe, recipe_to_yaml, save_resolved,
                         shipped_recipes)
from fada.config.recipes import apply_overrides
from fada.errors import ConfigError, FadaError

# Full-scale recipes name local weight folders a test machine does not have; point them away.
NO_WEIGHTS = ["model.vae.kind=pixel", "model.vae.path=null", "model.unet.pretrained=null",
              "model.audio.kind=mel", "model.audio.path=null", "data.manifest=null", "distill.teacher=null"]


def test_shipped_recipes_listed():
    names = shipped_recipes()
    for name in ("teacher", "balanced", "fast", "curate", "tiny-teacher", "tiny-balanced", "tiny-fast", "tiny-curate"):
        assert name in names
    assert names["fast"] == "distill" and names["teacher"] == "teacher" and names["curate"] == "curate"


def test_missing_inputs_say_which_override_to_set(tmp_path):
    from fada.config import missing_inputs, require_inputs

    student = load_recipe("tiny-fast")
    assert [p.split(":")[0] for p in missing_inputs(student)] == ["data.manifest", "distill.teacher"]
    assert "data.manifest=FILE" in missing_inputs(student)[0] and "B.jsonl" in missing_inputs(student)[0]
    only = missing_inputs(student, ["distill.teacher"])
    assert len(only) == 1 and only[0].startswith("distill.teacher: not set — give distill.teacher=")
    assert "A.jsonl" in missing_inputs(load_recipe("tiny-teacher"))[0]
    with pytest.raises(ConfigError) as e:
        require_inputs(student)
    assert len(e.value.problems) == 2
    (tmp_path / "B.jsonl").write_text("")
    (tmp_path / "teacher").mkdir()
    done = load_recipe("tiny-fast", [f"data.manifest={tmp_path / 'B.jsonl'}",
                                     f"distill.teacher={tmp_path / 'teacher'}"])
    assert missing_inputs(done) == [] and missing_inputs(load_recipe("tiny-curate")) == []


def test_recipe_summary_is_the_first_sentence_of_the_leading_comment():
    from fada.config import recipe_summary

    text = "# Fast (Eq. 10), one pass\n# per step. More detail.\nstage: distill\n# not this\n"
    assert recipe_summary(text) == "Fast (Eq. 10), one pass per step."
    assert recipe_summary("#\n# Only line\nstage: curate\n") == "Only line"
    assert recipe_summary("stage: curate\n# late comment\n") == ""


@pytest.mark.parametrize("name", ["tiny-teacher", "tiny-balanced", "tiny-fast", "tiny-curate"])
def test_tiny_recipes_validate(name):
    r = load_recipe(name)
    assert r.stage in ("teacher", "distill", "curate")


@pytest.mark.parametrize("name,stage", [("teacher", "teacher"), ("balanced", "distill"), ("fast", "distill")])
def test_full_recipes_hold_paper_settings(name, stage):
    overrides = [o for o in NO_WEIGHTS if not (stage == "teacher" and o.startswith("distill."))]
    r = load_recipe(name, overrides, stage=stage)
    assert r.model.resolution == 512 and r.model.num_frames == 16 and r.model.motion_frames == 2
    if stage == "distill":
        assert r.distill.num_windows == 4 and r.distill.inference_steps == 6
        m = r.distill.mixed
        assert (m.s, m.w0, m.r_peak, m.r_dead) == (0.25, 0.2, 30, 100)
    assert (name == "fast") == (r.model.cfg.mode == "tokens")


def test_full_recipe_names_missing_weights():
    with pytest.raises(ConfigError) as e:
        load_recipe("teacher", stage="teacher")
    text = "\n".join(e.value.problems)
    assert "model.unet.pretrained: folder not found: models/stable-diffusion-v1-5" in text
    assert "model.audio.path: folder not found" in text


def test_overrides_are_typed_and_nested():
    r = load_recipe("tiny-fast", ["train.max_steps=7", "model.unet.block_out_channels=[16, 32]",
                                  "model.unet.norm_num_groups=8", "distill.mixed.mode=fixed"])
    assert isinstance(r, DistillRecipe)
    assert r.train.max_steps == 7 and r.model.unet.block_out_channels == [16, 32]
    assert r.distill.mixed.mode == "fixed"


def test_bad_overrides():
    with pytest.raises(ConfigError) as e:
        load_recipe("tiny-fast", ["bogus.key=1", "train.max_steps=x"])
    text = "\n".join(e.value.problems)
    assert "bogus: unknown key (from override bogus.key=1)" in text
    assert "train.max_steps: expected int" in text
    with pytest.raises(ConfigError):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"train": 3}, ["train.max_steps=1"])


def test_unknown_recipe_and_wrong_stage():
    with pytest.raises(FadaError, match="recipe 'tiny-fats' not found.*did you mean 'tiny-fast'"):
        load_recipe("tiny-fats")
    with pytest.raises(FadaError, match="is a 'distill' recipe; this command needs a 'teacher' recipe"):
        load_recipe("tiny-fast", stage="teacher")


def test_recipe_from_path_and_resolved_copy(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("stage: teacher\ntrain: {max_steps: 3}\nmodel: {vae: {kind: pixel}, unet: {pretrained: null},"
                 " audio: {kind: mel, path: null}}\ndata: {manifest: null}\n")
    r = load_recipe(str(p), stage="teacher")
    assert isinstance(r, TeacherRecipe) and r.train.max_steps == 3
    out = save_resolved(r, tmp_path / "run")
    again = load_recipe(str(out), stage="teacher")
    assert again == r
    assert yaml.safe_load(recipe_to_yaml(r))["train"]["max_steps"] == 3


def test_invalid_yaml_is_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("stage: teacher\ntrain: [unclosed\n")
    with pytest.raises(FadaError, match="bad.yaml.*not valid YAML"):
        load_recipe(str(p))
