"""The study-spec schema (docs/design.md, Study spec), as pydantic models.

Structure is checked here; cross-checks that need the trainer (param names, metric names, knob
names) are in ``validate.py``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from hpsearch.errors import RuleError
from hpsearch.pruners.conditions import Condition
from hpsearch.pruners.declarative import RuleConfig

Scalar = str | int | float | bool
MAX_EPOCHS = 1_000_000
MAX_SEED = 2**32 - 1  # NumPy's seed range
MAX_STUDY_NAME = 200  # Optuna's column holds 512 characters; MLflow's experiment names fewer


def study_name_problem(name: object) -> str | None:
    """What is wrong with a study name (None: nothing): blank, too long, control characters."""
    if not isinstance(name, str) or not name.strip():
        return "a study name cannot be empty or blank; give a name such as 'cvfp-lr-sweep'"
    if len(name) > MAX_STUDY_NAME:
        return f"study name of {len(name)} characters is too long; use at most {MAX_STUDY_NAME}"
    if name != name.strip() or any(not character.isprintable() for character in name):
        return (
            f"study name {name[:60]!r} has leading/trailing blanks or control characters; "
            "remove them"
        )
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Conditional(_Strict):
    """``when``: the param is searched only in trials where this condition on the params
    sampled before it (and ``fixed``) holds, e.g. ``"schedule != 'adaptive'"``; elsewhere it is
    not sampled and the trainer gets its ``default`` (or the trainer's own default)."""

    when: str | None = None

    @field_validator("when")
    @classmethod
    def _parse_when(cls, when: str | None) -> str | None:
        if when is not None:
            try:
                Condition(when, strings=True)
            except RuleError as error:
                raise ValueError(str(error).replace("rule condition", "condition")) from None
        return when

    def condition(self) -> Condition | None:
        return None if self.when is None else Condition(self.when, strings=True)


class FloatParam(_Conditional):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None
    default: float | None = None

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        _check_numeric_range(self.low, self.high, self.log, self.default)
        if self.step is not None and not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"step must be a finite number > 0, got {self.step}")
        if self.step is not None and self.log:
            raise ValueError("step cannot be combined with log: true; remove one of them")
        return self


class IntParam(_Conditional):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1
    default: int | None = None

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        _check_numeric_range(self.low, self.high, self.log, self.default)
        if self.step <= 0:
            raise ValueError(f"step must be >= 1, got {self.step}")
        if self.log and self.step != 1:
            raise ValueError("step cannot be combined with log: true; remove one of them")
        return self


class CategoricalParam(_Conditional):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)
    default: Scalar | None = None

    @model_validator(mode="after")
    def _check_default(self) -> CategoricalParam:
        _check_distinct_choices(self.choices)
        if self.default is not None and self.default not in self.choices:
            raise ValueError(f"default {self.default!r} is not one of the choices {self.choices}")
        return self


def _check_distinct_choices(choices: list[Scalar]) -> None:
    """Choices that compare equal (1, 1.0, true) or read alike ("1" and 1) cannot be told
    apart by Optuna, the store or ``--set``."""
    for index, choice in enumerate(choices):
        for earlier in choices[:index]:
            if earlier == choice or str(earlier).lower() == str(choice).lower():
                raise ValueError(
                    f"choices {earlier!r} and {choice!r} cannot be told apart; keep one of them"
                )
        if isinstance(choice, float) and not math.isfinite(choice):
            raise ValueError(f"choice {choice!r} is not a finite number; remove it")


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _check_numeric_range(low: float, high: float, log: bool, default: float | None) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite numbers")
    if low >= high:
        raise ValueError(f"low ({low}) must be < high ({high}); swap them or widen the range")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0, got low={low}")
    if default is not None and not low <= default <= high:
        raise ValueError(f"default {default} is outside [{low}, {high}]")


class ObjectiveSpec(_Strict):
    """An objective on a final metric: a direction, or a band (0 inside, distance outside,
    minimized)."""

    metric: str
    direction: Literal["maximize", "minimize"] | None = None
    band: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _direction_or_band(self) -> ObjectiveSpec:
        if (self.direction is None) == (self.band is None):
            raise ValueError(
                "give exactly one of direction (maximize/minimize) or band: [low, high]"
            )
        if self.band is not None and self.band[0] >= self.band[1]:
            raise ValueError(f"band low ({self.band[0]}) must be < band high ({self.band[1]})")
        return self

    @property
    def name(self) -> str:
        """The objective's name in the study (Optuna metric name, dashboard, best configs)."""
        return f"{self.metric}_band_distance" if self.band is not None else self.metric

    @property
    def optuna_direction(self) -> str:
        return "minimize" if self.band is not None else str(self.direction)

    def value(self, metrics: dict[str, float]) -> float:
        """The objective value from final metrics (KeyError if the metric is missing)."""
        metric = float(metrics[self.metric])
        if self.band is None:
            return metric
        low, high = self.band
        return max(low - metric, 0.0, metric - high)


ConstraintOp = Literal[">=", "<=", ">", "<"]


class ConstraintSpec(_Strict):
    """Feasible when ``metric op value`` holds; stored as Optuna's constraint value (<= 0 is
    feasible): ``value - metric`` for >= and >, ``metric - value`` for <= and <."""

    metric: str
    op: ConstraintOp
    value: float

    @property
    def name(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"

    def violation(self, metrics: dict[str, float]) -> float:
        metric = float(metrics[self.metric])
        return self.value - metric if self.op in (">=", ">") else metric - self.value


class SamplerSpec(_Strict):
    name: Literal["tpe", "nsga2", "nsga3", "gp", "random", "qmc"] = "tpe"
    seed: int | None = Field(default=0, ge=0, le=MAX_SEED)
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerSpec(BaseModel):
    """``name`` plus the pruner's own options (e.g. ``n_warmup_steps`` for median)."""

    model_config = ConfigDict(extra="allow")

    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class QuickSpec(_Strict):
    """A smaller variant of a study for ``--quick`` (minutes on 2 CPU cores): its own epochs
    and ``fixed`` overrides; the study is named ``<name>-quick`` so it never mixes with the
    full-size one."""

    epochs: int | None = Field(default=None, ge=1)
    fixed: dict[str, Scalar] = Field(default_factory=dict)
    note: str = ""


QUICK_SUFFIX = "-quick"


IN_PYTHON = "<spec>"  # the source of a spec built in Python, not read from a file
SPEC_ATTR = "hpsearch_spec"  # the study's user attr that holds its spec as JSON


class StudySpec(_Strict):
    """A whole study spec (one YAML file)."""

    name: str = Field(min_length=1)
    trainer: str = Field(min_length=1, max_length=500)
    description: str = ""
    epochs: int = Field(ge=1, le=MAX_EPOCHS)
    trial_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    fixed: dict[str, Scalar] = Field(default_factory=dict)
    space: dict[str, ParamSpec] = Field(min_length=1)
    objectives: list[ObjectiveSpec] = Field(min_length=1)
    constraints: list[ConstraintSpec] = Field(default_factory=list)
    rules: list[str | RuleConfig] = Field(default_factory=list)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec | None = None
    quick: QuickSpec | None = None
    _source: str = PrivateAttr(default=IN_PYTHON)

    @model_validator(mode="after")
    def _conditions_name_earlier_params(self) -> StudySpec:
        """A ``when`` may read ``fixed`` and the space params listed before it."""
        known = set(self.fixed)
        for key, param in self.space.items():
            condition = param.condition()
            unknown = sorted(condition.names - known) if condition else []
            if unknown:
                raise ValueError(
                    f"space.{key}.when: {unknown[0]!r} is not a fixed param or a space param "
                    f"listed before {key!r}; use one of {', '.join(sorted(known)) or 'none'}"
                )
            known.add(key)
        return self

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name: str) -> str:
        problem = study_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name

    @field_validator("fixed")
    @classmethod
    def _finite_fixed(cls, fixed: dict[str, Scalar]) -> dict[str, Scalar]:
        for key, value in fixed.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{key}: {value} is not a finite number; give a number")
        return fixed

    @property
    def source(self) -> str:
        """Where the spec came from: a packaged name's file, the user's path, or ``IN_PYTHON``
        (built from a dict or by hand)."""
        return self._source

    @property
    def from_file(self) -> bool:
        """Whether ``hpsearch run`` can be given ``source`` again (not built in Python)."""
        return self._source != IN_PYTHON

    @property
    def objective_names(self) -> list[str]:
        return [objective.name for objective in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [objective.optuna_direction for objective in self.objectives]

    def quick_variant(self) -> StudySpec:
        """The ``quick:`` variant: its epochs and fixed overrides, named ``<name>-quick``.
        Raises ValueError when the spec has no ``quick:`` section."""
        if self.quick is None:
            raise ValueError(f"spec {self.name!r} has no quick: section")
        variant = self.model_copy(
            update={
                "name": f"{self.name}{QUICK_SUFFIX}",
                "epochs": self.quick.epochs or self.epochs,
                "fixed": {**self.fixed, **self.quick.fixed},
                "quick": None,
            }
        )
        variant._source = self._source
        return variant

    def default_params(self) -> dict[str, Scalar]:
        """Every space key at its ``default`` (else the midpoint / first choice)."""
        return {key: default_of(param) for key, param in self.space.items()}


def default_of(param: FloatParam | IntParam | CategoricalParam) -> Scalar:
    if param.default is not None:
        return param.default
    if isinstance(param, CategoricalParam):
        return param.choices[0]
    if isinstance(param, IntParam):
        return (param.low + param.high) // 2
    if param.log:
        return math.sqrt(param.low * param.high)
    return (param.low + param.high) / 2
