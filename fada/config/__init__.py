"""Recipes: typed dataclass configs loaded from YAML with ``key.sub=value`` overrides."""

from fada.config.model import AudioConfig, CFGConfig, ModelConfig, UNetConfig, VAEConfig
from fada.config.recipes import (load_recipe, missing_inputs, recipe_summary, recipe_to_yaml, require_inputs,
                                 resolve_recipe, save_resolved, shipped_recipe_summaries, shipped_recipes)
from fada.config.schema import (CurateConfig, CurateRecipe, DataConfig, DistillConfig, DistillRecipe,
                                FilterThresholds, MixedSupervisionConfig, TeacherConfig, TeacherRecipe, TrainConfig)
from fada.config.validate import from_dict, to_dict

__all__ = [
    "AudioConfig", "CFGConfig", "ModelConfig", "UNetConfig", "VAEConfig", "load_recipe", "recipe_to_yaml",
    "resolve_recipe", "save_resolved", "shipped_recipes", "recipe_summary", "shipped_recipe_summaries",
    "missing_inputs", "require_inputs", "CurateConfig", "CurateRecipe", "DataConfig",
    "DistillConfig", "DistillRecipe", "FilterThresholds", "MixedSupervisionConfig", "TeacherConfig",
    "TeacherRecipe", "TrainConfig", "from_dict", "to_dict",
]
