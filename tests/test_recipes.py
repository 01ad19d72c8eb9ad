from pathlib import Path

import pytest

from lowbudget.errors import RecipeError
from lowbudget.recipe import MethodConfig, Recipe, load_recipe, parse_override
from lowbudget.recipe import tomllib

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").rglob("*.toml"))


def test_recipes_are_shipped_for_every_modality_family_and_method():
    names = {p.relative_to(p.parents[1]).as_posix() for p in RECIPES}
    for modality in ("prostate-mri", "chest-xray", "histopathology"):
        for family in ("sd2", "sd15"):
            for method in ("ti", "lora", "ti-lora"):
                assert f"{modality}/{family}-{method}.toml" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_every_recipe_parses_and_round_trips(path):
    recipe = load_recipe(path)
    again = tomllib.loads(recipe.to_toml())
    assert again == recipe.to_dict()


def test_paper_settings_in_sd2_ti_recipes():
    for path in RECIPES:
        if path.name == "sd2-ti.toml":
            r = load_recipe(path)
            assert r.model.family == "sd2" and r.method.tokens[0].n_vectors == 64
            assert r.data.max_images == 100


def _write(tmp_path, text):
    p = tmp_path / "r.toml"
    p.write_text(text)
    return p


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    p = _write(tmp_path, "[data]\nresoltion = 64\n")
    with pytest.raises(RecipeError, match=r"unknown key 'data.resoltion' \(did you mean 'resolution'\?\)"):
        load_recipe(p)


def test_unknown_table_is_named(tmp_path):
    with pytest.raises(RecipeError, match="unknown key 'optimizer'"):
        load_recipe(_write(tmp_path, "[optimizer]\nlr = 1\n"))


def test_wrong_type_and_bad_choice_are_named(tmp_path):
    with pytest.raises(RecipeError, match="optim.max_steps = '10' must be of type int"):
        load_recipe(_write(tmp_path, '[optim]\nmax_steps = "10"\n'))
    with pytest.raises(RecipeError, match="method.kind = 'dreambooth' is not allowed"):
        load_recipe(_write(tmp_path, '[method]\nkind = "dreambooth"\n'))
    with pytest.raises(RecipeError, match="needs at least one \\[\\[method.tokens\\]\\]"):
        load_recipe(_write(tmp_path, '[method]\nkind = "ti"\n'))


def test_invalid_toml_names_the_file(tmp_path):
    with pytest.raises(RecipeError, match="r.toml' is not valid TOML"):
        load_recipe(_write(tmp_path, "[data\n"))


def test_overrides_apply_and_validate(tmp_path):
    p = _write(tmp_path, '[method]\nkind = "lora"\n')
    r = load_recipe(p, dict([parse_override("optim.lr_lora=0.01"), parse_override("output.dir=runs/x")]))
    assert r.optim.lr_lora == 0.01 and r.output.dir == "runs/x"
    with pytest.raises(RecipeError, match="optim.batch_size = 0 must be > 0"):
        load_recipe(p, {"optim.batch_size": 0})


def test_shareable_recipe_has_no_local_paths():
    r = Recipe(method=MethodConfig(kind="lora"))
    r.data.path, r.model.base, r.output.dir = "/data/patient-123", "/models/sd", "/runs/x"
    shared = r.shareable_dict()
    assert "patient-123" not in str(shared) and "/models/sd" not in str(shared)
    assert shared["data"]["path"] == "<local path>"
