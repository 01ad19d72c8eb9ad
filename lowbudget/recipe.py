"""Training recipes: TOML files loaded into typed dataclasses, one table per concern.

    [data]    where the images are, how they are read and captioned
    [model]   which base model, precision, memory options
    [method]  what is trained: textual inversion tokens, LoRA, or both
    [optim]   steps, batch, learning rates, schedule, seed
    [output]  where results go, checkpoints, validation samples, file metadata

Unknown keys are rejected by name, values are validated in ``__post_init__``, CLI flags
override single values (``--set optim.lr_ti=1e-2``), and the resolved recipe is saved beside
the outputs so that a run can be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from lowbudget import checks
from lowbudget.errors import RecipeError

T = TypeVar("T")


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _choice(where: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise RecipeError(f"{where} = {value!r} is not allowed; expected one of {', '.join(map(repr, allowed))}")


def _positive(where: str, value: float, *, zero_ok: bool = False) -> None:
    checks.finite(where, value, RecipeError)  # NaN passes every comparison below
    if value < 0 or (value == 0 and not zero_ok):
        raise RecipeError(f"{where} = {value!r} must be {'>= 0' if zero_ok else '> 0'}")


@dataclass
class DataConfig:
    path: str = _help("Folder of training images (PNG/JPEG/TIFF, DICOM, NIfTI); --data overrides.", "")
    phantoms: str = _help(
        "Generated data instead of a folder: 'MODALITY/FINDING', e.g. 'chest/effusion' (used when path is empty).", ""
    )
    phantoms_n: int = _help("How many phantoms to generate for data.phantoms.", 100)
    phantoms_seed: int = _help("Seed of the phantom generator.", 0)
    modality: str = _help("Free-text modality name stored in adapter metadata, e.g. 'prostate MRI'.", "")
    resolution: int = _help("Training resolution in pixels; images are resized and centre-cropped.", 512)
    center_crop: bool = _help("Centre-crop to a square after resizing the short side (else squash).", True)
    max_images: int = _help("Use at most this many images (0 = all), taken in sorted file order.", 0)
    captions: str = _help("auto | metadata | csv | templates. auto: metadata.jsonl if present, else templates.", "auto")
    captions_csv: str = _help("CSV file with one caption per image (columns csv_file_column, csv_text_column).", "")
    csv_file_column: str = _help("CSV column holding the image file name.", "file_name")
    csv_text_column: str = _help("CSV column holding the caption.", "text")
    templates: list[str] = _help(
        "Caption templates; {token} is replaced by the learned token(s). One is drawn per image per step.",
        factory=lambda: ["a medical image of {token}"],
    )
    caption_format: str = _help(
        "How a metadata/CSV caption becomes the training caption: {caption} and {token} placeholders.",
        "{caption}",
    )
    intensity: str = _help(
        "Scaling of 16-bit and float images to [0, 1]: percentile | minmax | dtype (8-bit is always /255).",
        "percentile",
    )
    percentiles: list[float] = _help("Low and high percentiles of the percentile window.", factory=lambda: [0.5, 99.5])
    dicom_window: str = _help("DICOM: header (WindowCenter/Width, else percentile) | percentile.", "header")
    dicom_frame: int = _help("DICOM multi-frame: frame index to use (-1 = middle frame).", -1)
    nifti_axis: int = _help("NIfTI: slicing axis (2 = axial for RAS volumes).", 2)
    nifti_slice: int = _help("NIfTI: slice index along nifti_axis (-1 = middle slice).", -1)
    mask_dir: str = _help("Optional folder of loss masks (PNG, same file stem as the image; white = train).", "")
    long_captions: str = _help(
        "error | trim: a caption that passes the text encoder's 77 tokens once the token's vectors are expanded is "
        "an error, or loses words from its end until it fits (the token and caption_format's words are kept).",
        "error")
    validation_fraction: float = _help(
        "Hold out this fraction of the patients for the validation loss (0 = none). Patients come from a "
        "patient_id (else study_id) column of metadata.jsonl or the captions CSV; without one, every image is its "
        "own patient. At least one patient is held out and at least one trains.", 0.0)
    validation_path: str = _help("A folder of validation images instead of validation_fraction (read like data.path).", "")
    validation_seed: int = _help("Seed of the patient split (kept apart from optim.seed: runs with other seeds "
                                 "validate on the same patients).", 0)

    def __post_init__(self) -> None:
        checks.image_size("data.resolution", self.resolution, RecipeError)
        _positive("data.max_images", self.max_images, zero_ok=True)
        _choice("data.captions", self.captions, ("auto", "metadata", "csv", "templates"))
        _choice("data.intensity", self.intensity, ("percentile", "minmax", "dtype"))
        _choice("data.dicom_window", self.dicom_window, ("header", "percentile"))
        for value in self.percentiles:
            checks.finite("data.percentiles", value, RecipeError)
        if len(self.percentiles) != 2 or not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise RecipeError(f"data.percentiles = {self.percentiles!r}; expected [low, high] with 0 <= low < high <= 100")
        if not self.templates:
            raise RecipeError("data.templates is empty; give at least one caption template")
        if "{caption}" not in self.caption_format:
            raise RecipeError(f"data.caption_format = {self.caption_format!r} must contain {{caption}}")
        if self.phantoms and self.phantoms.count("/") != 1:
            raise RecipeError(f"data.phantoms = {self.phantoms!r}; expected 'MODALITY/FINDING', e.g. 'chest/effusion'")
        _positive("data.phantoms_n", self.phantoms_n)
        checks.seed("data.phantoms_seed", self.phantoms_seed, RecipeError)
        _choice("data.long_captions", self.long_captions, ("error", "trim"))
        checks.within("data.validation_fraction", self.validation_fraction, 0.0, 0.9, RecipeError)
        if self.validation_fraction and self.validation_path:
            raise RecipeError("give data.validation_fraction or data.validation_path, not both")
        checks.seed("data.validation_seed", self.validation_seed, RecipeError)

    @property
    def validates(self) -> bool:
        """Whether the recipe sets validation images apart."""
        return bool(self.validation_fraction or self.validation_path)


@dataclass
class ModelConfig:
    base: str = _help("Base model: diffusers folder or single-file .safetensors; empty = embedded base (embedded-xl: its SDXL twin). --base overrides.", "")
    family: str = _help("Expected base family: sd1 | sd2 | sdxl | any. A base of another family is refused.", "any")
    prediction_type: str = _help("auto (from the scheduler config) | epsilon | v_prediction.", "auto")
    precision: str = _help("fp32 | bf16 | fp16 autocast; trainable tensors always stay fp32.", "fp32")
    gradient_checkpointing: bool = _help("Recompute activations in backward: less memory, ~30% slower.", False)

    def __post_init__(self) -> None:
        _choice("model.family", self.family, ("any", "sd1", "sd2", "sdxl"))
        _choice("model.prediction_type", self.prediction_type, ("auto", "epsilon", "v_prediction"))
        _choice("model.precision", self.precision, ("fp32", "bf16", "fp16"))


@dataclass
class TokenConfig:
    name: str = _help("The new token, e.g. '<prostate-mri>'. Must not already be in the vocabulary.", "")
    init: str = _help("Initializer word(s); their embeddings seed the vectors, cycled over n_vectors.", "")
    n_vectors: int = _help("Vectors per token (the paper uses 64). Expands to '<t> <t>_1 ... <t>_{n-1}'.", 1)

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise RecipeError(f"method.tokens name = {self.name!r} must be a non-empty string without spaces")
        if "{" in self.name or "}" in self.name:
            raise RecipeError(f"method.tokens name = {self.name!r} must not contain braces")
        if not self.init.strip():
            raise RecipeError(f"method.tokens '{self.name}' needs init = '<initializer word(s)>'")
        if not 1 <= self.n_vectors <= 75:
            raise RecipeError(
                f"method.tokens '{self.name}' n_vectors = {self.n_vectors}; expected 1..75 (a prompt holds 75 tokens)"
            )


LORA_PRESETS = ("cross-kv", "attention", "custom")


@dataclass
class LoraConfig:
    rank: int = _help("LoRA rank r.", 4)
    alpha: float = _help("LoRA alpha; the update is scaled by alpha / rank.", 4.0)
    dropout: float = _help("Dropout on the LoRA branch.", 0.0)
    preset: str = _help(
        "cross-kv: U-Net cross-attention to_k/to_v only (smallest file) | attention: to_q/to_k/to_v/to_out.0 "
        "of every U-Net attention | custom: target_modules below.",
        "cross-kv",
    )
    target_modules: list[str] = _help("Module name suffixes for preset = 'custom'.", factory=list)
    text_encoder: bool = _help("Also put LoRA on the text encoder's attention projections (both encoders on SDXL).", False)

    def __post_init__(self) -> None:
        _positive("method.lora.rank", self.rank)
        _positive("method.lora.alpha", self.alpha)
        if not 0 <= self.dropout < 1:
            raise RecipeError(f"method.lora.dropout = {self.dropout} must be in [0, 1)")
        _choice("method.lora.preset", self.preset, LORA_PRESETS)
        if self.preset == "custom" and not self.target_modules:
            raise RecipeError("method.lora.preset = 'custom' needs method.lora.target_modules")


@dataclass
class MethodConfig:
    kind: str = _help("ti (textual inversion) | lora | ti+lora (pivotal tuning).", "ti")
    tokens: list[TokenConfig] = _help("Tokens to learn ([[method.tokens]] tables); needed for ti and ti+lora.", factory=list)
    lora: LoraConfig = _help("LoRA settings ([method.lora]); used for lora and ti+lora.", factory=LoraConfig)
    ti_fraction: float = _help("ti+lora: the tokens train during this first fraction of the steps, LoRA throughout.", 0.5)

    def __post_init__(self) -> None:
        _choice("method.kind", self.kind, ("ti", "lora", "ti+lora"))
        if self.kind in ("ti", "ti+lora") and not self.tokens:
            raise RecipeError(f"method.kind = '{self.kind}' needs at least one [[method.tokens]] table")
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise RecipeError(f"method.tokens names must be distinct; got {names}")
        if not 0 < self.ti_fraction <= 1:
            raise RecipeError(f"method.ti_fraction = {self.ti_fraction} must be in (0, 1]")

    @property
    def trains_tokens(self) -> bool:
        return self.kind in ("ti", "ti+lora")

    @property
    def trains_lora(self) -> bool:
        return self.kind in ("lora", "ti+lora")


@dataclass
class OptimConfig:
    max_steps: int = _help("Optimizer steps; --max-steps overrides.", 1000)
    batch_size: int = _help("Images per micro-batch.", 1)
    grad_accum: int = _help("Micro-batches per optimizer step.", 1)
    lr_ti: float = _help("Learning rate of the token vectors.", 5e-3)
    lr_lora: float = _help("Learning rate of the LoRA matrices.", 1e-4)
    schedule: str = _help("constant | linear | cosine decay after warm-up.", "constant")
    warmup_steps: int = _help("Linear warm-up steps.", 0)
    weight_decay: float = _help("AdamW weight decay, LoRA matrices only (token vectors never decay).", 0.0)
    max_grad_norm: float = _help("Gradient clipping norm (0 = off).", 1.0)
    seed: int = _help("Seed of every random draw of the run (data order, noise, timesteps).", 0)
    deterministic: bool = _help(
        "Bit-for-bit repeatable runs (and resumes): deterministic kernels and one CPU thread, so slower on a CPU "
        "with several cores. Off: two runs agree to float rounding (about 1e-6 after a few hundred steps).", False)
    min_timestep: int = _help(
        "Train on diffusion timesteps >= this only (0 = all). High-noise steps decide global structure, such as "
        "whether a finding is there at all; fine detail is learnt at low noise.", 0)
    stop: str = _help(
        "fixed: train max_steps. validation: stop when the validation loss (data.validation_*) has not improved for "
        "`patience` evaluations and write the best step's adapter. dvar: stop when a deterministic training loss "
        "flattens (Voronov et al. 2023): the variance of its last `window` values falls below `dvar_threshold` of "
        "the variance of all of them. Losses are computed every output.validation_every steps.", "fixed")
    patience: int = _help("stop = validation: evaluations without a new best before stopping.", 5)
    window: int = _help("stop = dvar: evaluations in the window.", 5)
    dvar_threshold: float = _help("stop = dvar: stop when var(last window) / var(all) falls below this.", 0.15)
    min_steps: int = _help("Never stop early before this step.", 0)
    snr_gamma: float = _help("Min-SNR-gamma loss weighting (Hang et al. 2023), e.g. 5; 0 = off (plain MSE).", 0.0)
    ema_decay: float = _help("Write an exponential moving average of the trainable tensors with this decay, "
                             "e.g. 0.99; 0 = off (the last step's tensors).", 0.0)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum"):
            _positive(f"optim.{name}", getattr(self, name))
        for name in ("lr_ti", "lr_lora"):
            _positive(f"optim.{name}", getattr(self, name))
        for name in ("warmup_steps", "weight_decay", "max_grad_norm"):
            _positive(f"optim.{name}", getattr(self, name), zero_ok=True)
        _choice("optim.schedule", self.schedule, ("constant", "linear", "cosine"))
        checks.seed("optim.seed", self.seed, RecipeError)
        _positive("optim.min_timestep", self.min_timestep, zero_ok=True)
        _choice("optim.stop", self.stop, ("fixed", "validation", "dvar"))
        _positive("optim.patience", self.patience)
        checks.at_least("optim.window", self.window, 2, RecipeError)
        checks.within("optim.dvar_threshold", self.dvar_threshold, 0.0, 1.0, RecipeError)
        _positive("optim.min_steps", self.min_steps, zero_ok=True)
        _positive("optim.snr_gamma", self.snr_gamma, zero_ok=True)
        checks.within("optim.ema_decay", self.ema_decay, 0.0, 0.9999, RecipeError)


@dataclass
class OutputConfig:
    dir: str = _help("Output folder; --output overrides.", "runs/lowbudget")
    checkpoint_every: int = _help("Write a resumable checkpoint every N steps (0 = only at the end).", 500)
    validation_every: int = _help(
        "Validate every N steps (0 = never): the validation loss (with data.validation_*), the deterministic loss "
        "of optim.stop = 'dvar', and grids of the validation prompts.", 0)
    validation_prompts: list[str] = _help("Validation prompts; {token} is replaced as in captions.", factory=list)
    validation_seeds: list[int] = _help("One image per seed per prompt, the same seeds every time.", factory=lambda: [0, 1, 2, 3])
    validation_inference_steps: int = _help("Sampler steps for validation images.", 25)
    validation_guidance: float = _help("Classifier-free guidance scale for validation images.", 7.5)
    save_dtype: str = _help("fp32 | fp16 tensors in the adapter files.", "fp32")
    description: str = _help("One-line description stored in the adapter files.", "")
    license: str = _help("Licence stored in the adapter files, e.g. 'CC-BY-4.0'.", "")

    def __post_init__(self) -> None:
        for name in ("checkpoint_every", "validation_every"):
            _positive(f"output.{name}", getattr(self, name), zero_ok=True)
        # every Stable Diffusion scheduler is trained on 1,000 timesteps; train checks the base's own
        checks.within("output.validation_inference_steps", self.validation_inference_steps, 1, 1000, RecipeError)
        checks.finite("output.validation_guidance", self.validation_guidance, RecipeError)
        checks.seeds("output.validation_seeds", self.validation_seeds, RecipeError)
        _choice("output.save_dtype", self.save_dtype, ("fp32", "fp16"))


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        """What one table alone cannot check: validation needs images, a cadence and a use."""
        stop, every = self.optim.stop, self.output.validation_every
        if stop == "validation" and not self.data.validates:
            raise RecipeError("optim.stop = 'validation' needs validation images: set data.validation_fraction "
                              "(e.g. 0.2) or data.validation_path")
        if stop != "fixed" and not every:
            raise RecipeError(f"optim.stop = {stop!r} needs output.validation_every > 0 (how often the loss is computed)")
        if self.data.validates and not every:
            raise RecipeError("data.validation_fraction / validation_path hold images out, but output.validation_every "
                              "= 0 never computes their loss; set it, e.g. 50")
        if every and not (self.output.validation_prompts or self.data.validates or stop == "dvar"):
            raise RecipeError("output.validation_every is set but there is nothing to validate: give "
                              "output.validation_prompts, data.validation_fraction or optim.stop = 'dvar'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def shareable_dict(self) -> dict[str, Any]:
        """The recipe without local paths, for adapter metadata that leaves the site."""
        d = self.to_dict()
        for table, key in (("data", "path"), ("data", "captions_csv"), ("data", "mask_dir"), ("data", "validation_path"),
                           ("model", "base"), ("output", "dir")):
            if d[table][key]:
                d[table][key] = "<local path>"
        return d

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())


# --------------------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read a TOML recipe, apply ``{"table.key": value}`` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe '{path}' does not exist; expected a TOML file such as recipes/chest-xray/sd15-ti.toml")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe '{path}' is not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return _build(Recipe, raw, "")
    except RecipeError as exc:
        raise RecipeError(f"recipe '{path}': {exc}{_set_syntax(str(exc), overrides or {})}") from None


def _set_syntax(message: str, overrides: dict[str, Any]) -> str:
    """When an error is about the value of a key given with --set, how --set values are written."""
    if "unknown key" in message or not any(k in message for k in overrides):
        return ""
    return ("; --set values are TOML: --set data.templates='[\"a {token}\"]' (a list), --set optim.lr_ti=1e-2 "
            "(a number), --set data.intensity=dtype (a bare word is a string)")


def build_config(cls: type[T], overrides: dict[str, Any]) -> T:
    """A config dataclass from its defaults and dotted ``{"key": value}`` overrides, checked by the
    same rules as a recipe (unknown keys named with the closest match, types, value checks)."""
    raw: dict[str, Any] = {}
    for dotted, value in overrides.items():
        _set_dotted(raw, dotted, value)
    try:
        return _build(cls, raw, "")
    except RecipeError as exc:
        raise RecipeError(f"{exc}{_set_syntax(str(exc), overrides)}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr_ti=1e-2' -> ('optim.lr_ti', 0.01); values are TOML, bare words are strings."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r} must look like KEY=VALUE, e.g. --set optim.lr_ti=1e-2")
    key, value = (s.strip() for s in text.split("=", 1))
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override '{dotted}': '{part}' is not a table")
    node[parts[-1]] = value


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise RecipeError(f"'{where}' must be a table, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; expected one of {', '.join(names)}"
            raise RecipeError(f"unknown key '{dotted}'{hint}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            raise RecipeError(f"{where} must be a list, got {value!r}")
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, float, bool) and (type(value) is not hint):
        raise RecipeError(f"{where} = {value!r} must be of type {hint.__name__}")
    return value


# --------------------------------------------------------------------------- writing


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(data: dict[str, Any], prefix: str = "", notes: dict[str, str] | None = None) -> str:
    """Write nested dicts (tables) and lists of dicts (arrays of tables) as TOML; ``notes`` (dotted
    key -> text) become comments above their keys."""
    notes = notes or {}
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, dict) and not _is_table_list(v)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    arrays = [(k, v) for k, v in data.items() if _is_table_list(v)]
    lines = []
    for key, value in scalars:
        lines += [f"# {line}" for line in textwrap.wrap(notes.get(prefix + key, ""), 98)]
        lines.append(f"{key} = {_toml_value(value)}")
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{prefix}{key}]]", dump_toml(item, f"{prefix}{key}.", notes).rstrip()]
    for key, table in tables:
        lines += ["", f"[{prefix}{key}]", dump_toml(table, f"{prefix}{key}.", notes).rstrip()]
    return "\n".join(lines).strip() + "\n"


def explained_toml(config: Any) -> str:
    """A config dataclass as TOML with each key's help text above it as a comment: the resolved
    recipe that documents itself."""
    return dump_toml(dataclasses.asdict(config), notes=_help_texts(config))


def _help_texts(config: Any, prefix: str = "") -> dict[str, str]:
    """Dotted key -> the help text of its dataclass field, through nested tables and arrays of tables."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out |= _help_texts(value, f"{prefix}{f.name}.")
        elif isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            out |= _help_texts(value[0], f"{prefix}{f.name}.")
        else:
            out[prefix + f.name] = f.metadata.get("help", "")
    return out


def shipped_recipes() -> Path:
    """The recipes/ folder of a lowbudget checkout (beside the package), relative to the working
    directory when it is inside it, so that the paths listed can be typed as they are."""
    folder = Path(__file__).resolve().parents[1] / "recipes"
    try:
        return folder.relative_to(Path.cwd())
    except ValueError:
        return folder


def recipe_summary(path: Path) -> str:
    """A recipe file's first comment line (what it is for), without the '#'."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return "(no description)"


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
