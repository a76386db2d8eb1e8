"""The hostile-input catalogue: one case a row, each through the real ``hpsearch`` command.

Every refused case must give exit code 2, exactly one stderr line ``hpsearch: error: ...`` that
names the problem and the fix (the row's pattern), no traceback, and leave the store as it was
(the rows of every table counted before and after; a store that did not exist is not created).
The few accepted cases (unicode and quoted study names, a division by zero met at run time)
must run and write their trials. Signals and faults inside trials are in their own files.
"""

from __future__ import annotations

import re
import sqlite3
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from cli_harness import invoke, store_rows
from toy_spec import toy_spec


@dataclass
class Case:
    id: str
    kind: str  # spec / name / value / store / trainer
    argv: list[str]
    pattern: str  # what the one stderr line must say (a regex: the problem ... the fix)
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)
    code: int = 2
    new_trials: int = 0  # accepted cases: trials they add


def spec_text(**changes: Any) -> str:
    return yaml.safe_dump(toy_spec(**{"epochs": 2, **changes}))


def spec_with(**changes: Any) -> dict[str, str]:
    return {"s.yaml": spec_text(**changes)}


def run_spec(*extra: str) -> list[str]:  # one more trial: the seeded store already has one
    return ["run", "{dir}/s.yaml", "--more-trials", "1", "--storage", "{store}", "--no-mlflow",
            "--no-progress", *extra]  # fmt: skip


RUN_TOY = ["run", "{dir}/toy.yaml", "--trials", "1", "--storage", "{store}", "--no-mlflow",
           "--no-progress"]  # fmt: skip
STORE_RUN = ["run", "{dir}/toy.yaml", "--trials", "1", "--no-mlflow", "--no-progress",
             "--storage"]  # fmt: skip
X_SPACE = {"type": "float", "low": 0.0, "high": 1.0}
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)


def rule(when: str, **extra: Any) -> dict[str, Any]:
    return {"rules": [{"name": "r", "when": when, "then": "abort", **extra}]}


def trainer_module(name: str, body: str) -> dict[str, str]:
    return {
        f"{name}.py": textwrap.dedent(body),
        "s.yaml": spec_text(trainer=f"{name}:Trainer"),
    }


SPEC_CASES = [
    Case("yaml-syntax", "spec", run_spec(), r"not valid YAML .*; fix the syntax",
         {"s.yaml": "name: [toy\n"}),
    Case("yaml-tabs", "spec", run_spec(), r"not valid YAML", {"s.yaml": "name: toy\n\tepochs: 2\n"}),
    Case("yaml-empty-file", "spec", run_spec(), r"must be a mapping of keys", {"s.yaml": ""}),
    Case("yaml-list", "spec", run_spec(), r"must be a mapping of keys", {"s.yaml": "- 1\n- 2\n"}),
    Case("yaml-scalar", "spec", run_spec(), r"must be a mapping of keys", {"s.yaml": "42\n"}),
    Case("yaml-two-documents", "spec", run_spec(), r"not valid YAML .*single document",
         {"s.yaml": "name: a\n---\nname: b\n"}),
    Case("yaml-alias-bomb-in-sampler-options", "spec", run_spec(),
         r"expands to more than \d+ values .* remove the repeated aliases",
         {"s.yaml": BOMB + spec_text()}),
    Case("yaml-alias-bomb-as-spec", "spec", run_spec(), r"expands to more than \d+ values",
         {"s.yaml": BOMB}),
    Case("yaml-deep-nesting-5000", "spec", run_spec(), r"nested (too deeply|more than \d+ levels)",
         {"s.yaml": "a: " + "[" * 5000 + "]" * 5000 + "\n"}),
    Case("yaml-deep-block-nesting", "spec", run_spec(), r"nested more than \d+ levels",
         {"s.yaml": "".join("  " * i + f"k{i}:\n" for i in range(60)) + "  " * 60 + "v: 1\n"}),
    Case("yaml-huge-file", "spec", run_spec(), r"has \d+ bytes; a spec has at most",
         {"s.yaml": "# " + "x" * 1_100_000 + "\n" + spec_text()}),
    Case("yaml-python-tag", "spec", run_spec(), r"not valid YAML .*python/object",
         {"s.yaml": "name: !!python/object/apply:os.system ['true']\n"}),
    Case("yaml-duplicate-top-key", "spec", run_spec(), r"duplicate key 'epochs'; keep one",
         {"s.yaml": spec_text() + "epochs: 3\n"}),
    Case("yaml-duplicate-nested-key", "spec", run_spec(), r"duplicate key 'low'; keep one",
         {"s.yaml": spec_text().replace("low: 0.0", "low: 0.0\n    low: 0.1", 1)}),
    Case("yaml-not-utf8", "spec", run_spec(), r"not UTF-8 text; save it as UTF-8",
         {"s.yaml": b"name: \xff\xfe toy\n"}),
    Case("spec-path-is-folder", "spec", ["run", "{dir}/folder.yaml/", "--storage", "{store}"],
         r"does not exist; give a path to a YAML file", {"folder.yaml/x": "x"}),
    Case("spec-missing-file", "spec", run_spec(), r"does not exist; give a path"),
    Case("spec-unknown-name", "spec", ["run", "nope", "--storage", "{store}"],
         r"unknown spec 'nope'; use a packaged spec"),
    Case("schema-unknown-key", "spec", run_spec(), r"colour: unknown key; remove it",
         spec_with(colour="red")),
    Case("schema-missing-key", "spec", run_spec(), r"trainer: required key is missing; add it",
         {"s.yaml": yaml.safe_dump({k: v for k, v in toy_spec().items() if k != "trainer"})}),
    Case("schema-epochs-text", "spec", run_spec(), r"epochs: .*valid integer",
         spec_with(epochs="ten")),
    Case("schema-epochs-zero", "spec", run_spec(), r"epochs: .*greater than or equal to 1",
         spec_with(epochs=0)),
    Case("schema-epochs-huge", "spec", run_spec(), r"epochs: .*less than or equal to",
         spec_with(epochs=10**12)),
    Case("schema-seed-huge", "spec", run_spec(), r"seed: .*less than or equal to",
         spec_with(seed=10**30)),
    Case("schema-low-not-below-high", "spec", run_spec(), r"low \(1.0\) must be < high \(0.0\)",
         spec_with(space={"x": {"type": "float", "low": 1.0, "high": 0.0}})),
    Case("schema-low-nan", "spec", run_spec(), r"low and high must be finite",
         {"s.yaml": spec_text().replace("low: 0.0", "low: .nan", 1)}),
    Case("schema-log-low-zero", "spec", run_spec(), r"log: true needs low > 0",
         spec_with(space={"x": {**X_SPACE, "log": True}})),
    Case("schema-int-log-and-step", "spec", run_spec(),
         r"step cannot be combined with log: true; remove one",
         spec_with(space={"x": {"type": "int", "low": 1, "high": 9, "log": True, "step": 2}})),
    Case("schema-float-step-nan", "spec", run_spec(), r"step must be a finite number > 0",
         {"s.yaml": spec_text(space={"x": {**X_SPACE, "step": 0.1}}).replace("0.1", ".nan")}),
    Case("schema-float-step-inf", "spec", run_spec(), r"step must be a finite number > 0",
         {"s.yaml": spec_text(space={"x": {**X_SPACE, "step": 0.1}}).replace("0.1", ".inf")}),
    Case("schema-default-outside", "spec", run_spec(), r"default 3.0 is outside \[0.0, 1.0\]",
         spec_with(space={"x": {**X_SPACE, "default": 3.0}})),
    Case("schema-choices-equal", "spec", run_spec(), r"choices .* cannot be told apart; keep one",
         spec_with(fixed={}, space={"mode": {"type": "categorical",
                                             "choices": [1, "1", True, 1.0]}})),
    Case("schema-choices-empty", "spec", run_spec(), r"choices: .*at least 1 item",
         spec_with(space={"mode": {"type": "categorical", "choices": []}})),
    Case("schema-fixed-nan", "spec", run_spec(), r"fixed: .*not a finite number",
         {"s.yaml": spec_text(fixed={"decay": 0.5}).replace("0.5", ".nan")}),
    Case("schema-direction-and-band", "spec", run_spec(), r"give exactly one of direction",
         spec_with(objectives=[{"metric": "loss", "direction": "minimize", "band": [0, 1]}])),
    Case("schema-trial-timeout-negative", "spec", run_spec(), r"trial_timeout: .*greater than 0",
         spec_with(trial_timeout=-1)),
    Case("schema-unknown-metric", "spec", run_spec(), r"reports no metric 'acc'; use one of",
         spec_with(objectives=[{"metric": "acc", "direction": "maximize"}])),
    Case("schema-unknown-param", "spec", run_spec(), r"has no param 'lr'; known params",
         spec_with(fixed={"lr": 0.1})),
    Case("schema-fixed-and-space", "spec", run_spec(), r"both in fixed and in space; keep it",
         spec_with(fixed={"x": 0.1})),
    Case("schema-bad-fixed-value", "spec", run_spec(), r"param x=5.0 is out of range",
         spec_with(fixed={"x": 5.0}, space={"y": X_SPACE})),
    Case("schema-blank-name", "spec", run_spec(), r"name: .*cannot be empty or blank",
         spec_with(name="   ")),
    Case("schema-name-too-long", "spec", run_spec(), r"name: .*too long; use at most 200",
         spec_with(name="n" * 600)),
    Case("rule-unknown-preset", "spec", run_spec(), r"unknown .*preset",
         spec_with(rules=["no-such-preset"])),
    Case("rule-code-call", "spec", run_spec(), r"this call is not allowed",
         spec_with(**rule("__import__('os').system('true') > 0"))),
    Case("rule-attribute", "spec", run_spec(), r"Attribute is not allowed",
         spec_with(**rule("loss.__class__ > 0"))),
    Case("rule-lambda", "spec", run_spec(), r"this call is not allowed",
         spec_with(**rule("(lambda: 1)() > 0"))),
    Case("rule-string", "spec", run_spec(), r"constant 'a' is not allowed",
         spec_with(**rule("'a' * 10 > loss"))),
    Case("rule-subscript", "spec", run_spec(), r"Subscript is not allowed",
         spec_with(**rule("[1][0] > loss"))),
    Case("rule-power-tower", "spec", run_spec(), r"'9 \*\* 9 \*\* 9' overflows",
         spec_with(**rule("9 ** 9 ** 9 > epoch"))),
    Case("rule-constant-division-by-zero", "spec", run_spec(), r"'1 / 0' divides by zero",
         spec_with(**rule("loss > 1 / 0"))),
    Case("rule-huge-literal", "spec", run_spec(), r"out of float range|float range",
         spec_with(**rule("loss > 1e400"))),
    Case("rule-100k-characters", "spec", run_spec(), r"has 100\d+ characters; write one of",
         spec_with(**rule("loss > " + "1 + " * 25_000 + "1"))),
    Case("rule-100k-unary-minus", "spec", run_spec(), r"characters; write one of at most",
         spec_with(**rule("-" * 100_000 + "loss > 0"))),
    Case("rule-deep-nesting", "spec", run_spec(), r"has too deep a nesting; write a simpler",
         spec_with(**rule("abs(" * 60 + "loss" + ")" * 60 + " > 0"))),
    Case("rule-division-by-zero-at-run-time", "spec", run_spec(), "",
         spec_with(**rule("loss / (epoch - epoch) > 1 or loss % 0 > 1")), code=0, new_trials=1),
    Case("rule-unknown-name", "spec", run_spec(), r"'acc' is not a metric, param or knob",
         spec_with(**rule("acc > 0"))),
    Case("rule-bounds-not-a-knob", "spec", run_spec(), r"'banana' is not a knob of trainer",
         spec_with(rules=[{"name": "r", "when": "loss > 0", "then": {"add": {"decay": 0.1}},
                           "bounds": {"banana": [0, 1]}}])),
    Case("rule-changes-not-a-knob", "spec", run_spec(), r"'x' is not a knob of trainer",
         spec_with(rules=[{"name": "r", "when": "loss > 0", "then": {"set": {"x": 0.1}}}])),
    Case("sampler-unknown", "spec", run_spec(), r"sampler.name: .*'tpe'",
         spec_with(sampler={"name": "annealing"})),
    Case("sampler-bad-option-name", "spec", run_spec(), r"sampler.options: .*check the options",
         spec_with(sampler={"name": "random", "options": {"colour": 1}})),
    Case("sampler-bad-option-value", "spec", run_spec(),
         r"sampler.options: .*population_size.* check the options",
         spec_with(sampler={"name": "nsga2", "options": {"population_size": 1}})),
    Case("pruner-unknown", "spec", run_spec(), r"unknown pruner 'magic'; use one of",
         spec_with(pruner={"name": "magic"})),
    Case("pruner-bad-option-value", "spec", run_spec(), r"pruner: .*startup.*check its options",
         spec_with(objectives=[{"metric": "loss", "direction": "minimize"}], constraints=[],
                   pruner={"name": "median", "n_startup_trials": -1})),
    Case("pruner-optuna-multi-objective", "spec", run_spec(), r"works only with one objective",
         spec_with(pruner={"name": "median"})),
]  # fmt: skip

NAME_CASES = [
    Case("name-empty", "name", [*RUN_TOY, "--study-name", ""], r"cannot be empty or blank"),
    Case("name-blank", "name", [*RUN_TOY, "--study-name", "   "], r"cannot be empty or blank"),
    Case("name-too-long", "name", [*RUN_TOY, "--study-name", "s" * 513],
         r"513 characters is too long; use at most 200"),
    Case("name-newline", "name", [*RUN_TOY, "--study-name", "a\nb"], r"control characters"),
    Case("name-unknown-for-best", "name", ["best", "toy", "--study-name", "nope", "--storage",
                                           "{store}"], r"no study 'nope' in .*run it first"),
    Case("name-unicode", "name", [*RUN_TOY, "--study-name", "études-α-研究"], "", code=0,
         new_trials=1),
    Case("name-quotes", "name", [*RUN_TOY, "--study-name", "it's \"quoted\"; --x"], "", code=0,
         new_trials=1),
]  # fmt: skip

VALUE_CASES = [
    Case("trials-zero", "value", [*RUN_TOY[:3], "0"], r"'--trials': 0 is not in the range.*--help"),
    Case("trials-negative", "value", [*RUN_TOY[:3], "-5"], r"'--trials'.*--help"),
    Case("trials-text", "value", [*RUN_TOY[:3], "many"], r"'many' is not a valid integer"),
    Case("trials-float", "value", [*RUN_TOY[:3], "1e3"], r"'1e3' is not a valid integer"),
    Case("timeout-negative", "value", [*RUN_TOY, "--timeout", "-1"], r"'--timeout'.*range"),
    Case("trial-timeout-zero", "value", [*RUN_TOY, "--trial-timeout", "0"],
         r"'--trial-timeout'.*range"),
    Case("unknown-option", "value", [*RUN_TOY, "--trails", "3"], r"No such option '--trails'.*'--trials'"),
    Case("device-banana", "value", [*RUN_TOY, "--device", "banana"],
         r"--device 'banana' is not a device; use auto, cpu, cuda"),
    Case("device-cuda-99", "value", [*RUN_TOY, "--device", "cuda:99"],
         r"--device 'cuda:99': (CUDA is not available|this machine has)"),
    Case("device-meta", "value", [*RUN_TOY, "--device", "meta"], r"not supported; use auto, cpu"),
    Case("set-nan", "value", ["try", "{dir}/toy.yaml", "--set", "x=nan"],
         r"--set x=nan: not a finite number"),
    Case("set-inf", "value", ["try", "{dir}/toy.yaml", "--set", "x=-inf"],
         r"--set x=-inf: not a finite number"),
    Case("set-text", "value", ["try", "{dir}/toy.yaml", "--set", "x=abc"],
         r"--set x=abc: not a number; e.g."),
    Case("set-unknown-key", "value", ["try", "{dir}/toy.yaml", "--set", "lr=1"],
         r"'lr' is not in the search space"),
    Case("set-no-equals", "value", ["try", "{dir}/toy.yaml", "--set", "x"], r"write key=value"),
    Case("env-heartbeat-text", "value", RUN_TOY, r"HPSEARCH_HEARTBEAT_S='soon' is not a whole",
         env={"HPSEARCH_HEARTBEAT_S": "soon"}),
    Case("env-grace-too-short", "value", RUN_TOY, r"HPSEARCH_GRACE_S=1 is shorter than two",
         env={"HPSEARCH_HEARTBEAT_S": "5", "HPSEARCH_GRACE_S": "1"}),
    Case("env-storage-bogus", "value", RUN_TOY[:-4] + ["--no-mlflow"],
         r"unsupported storage URL 'bogus://x'", env={"HPSEARCH_STORAGE": "bogus://x"}),
    Case("dashboard-port-text", "value", ["dashboard", "--port", "http"],
         r"'http' is not a valid integer"),
]  # fmt: skip
if not torch.cuda.is_available():
    VALUE_CASES.append(
        Case("device-cuda-without-cuda", "value", [*RUN_TOY, "--device", "cuda"],
             r"CUDA is not available on this machine; use --device cpu")
    )  # fmt: skip

STORE_CASES = [
    Case("store-unknown-driver", "store", [*STORE_RUN, "mysql://u:secret@h/db"],
         r"unsupported storage URL 'mysql://u:\*\*\*@h/db'"),
    Case("store-malformed-sqlite", "store", [*STORE_RUN, "sqlite:/x.db"],
         r"write sqlite:///relative/path.db"),
    Case("store-bad-port", "store", [*STORE_RUN, "postgresql+psycopg://u:secret@h:99999/db"],
         r"cannot open storage postgresql\+psycopg://u:\*\*\*@h:99999/db"),
    Case("store-port-not-a-number", "store",
         [*STORE_RUN, "postgresql+psycopg://u:secret@h:notaport/db"],
         r"cannot open storage .*u:\*\*\*@h:notaport"),
    Case("store-malformed-ipv6", "store", [*STORE_RUN, "postgresql+psycopg://u:secret@[::1/db"],
         r"cannot open storage .*u:\*\*\*@\["),
    Case("store-unreachable", "store",
         [*STORE_RUN, "postgresql+psycopg://u:secret@127.0.0.1:1/db"],
         r"cannot open storage .*u:\*\*\*@127.0.0.1:1/db.*server is running",
         env={"HPSEARCH_RECONNECT_S": "1"}),
    Case("store-missing-folder", "store", [*STORE_RUN, "sqlite:///{dir}/no/such/x.db"],
         r"folder .* does not exist; create it"),
    Case("store-a-folder", "store", [*STORE_RUN, "sqlite:///{dir}/folder"],
         r"is a folder; name a .db file", {"folder/x": "x"}),
    Case("store-read-only-place", "store", [*STORE_RUN, "sqlite:////proc/hpsearch.db"],
         r"cannot open storage sqlite:////proc/hpsearch.db"),
    Case("store-not-sqlite", "store", [*STORE_RUN, "sqlite:///{dir}/notes.txt"],
         r"is not an SQLite database; name another file", {"notes.txt": "dear diary\n" * 10}),
    Case("store-foreign-sqlite", "store", [*STORE_RUN, "sqlite:///{dir}/foreign.db"],
         r"another program's SQLite database \(tables accounts\); name another file"),
    Case("store-missing-file-for-best", "store", ["best", "toy", "--storage",
                                                  "sqlite:///{dir}/none.db"],
         r"none.db' does not exist; check --storage"),
    Case("store-missing-file-for-studies", "store", ["studies", "--storage",
                                                     "sqlite:///{dir}/none.db"],
         r"does not exist; check --storage"),
    Case("store-other-directions", "store", run_spec(), r"exists with directions .* another",
         spec_with(objectives=[{"metric": "loss", "direction": "maximize"},
                               {"metric": "quality", "band": [0.9, 0.95]}])),
    Case("store-other-param-type", "store", run_spec(),
         r"space.x: study 'toy' already searches 'x' as .*pass another --study-name",
         spec_with(space={"x": {"type": "int", "low": 0, "high": 1},
                          "y": X_SPACE})),
    Case("store-other-log", "store", run_spec(), r"space.x: study 'toy' already searches",
         spec_with(space={"x": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
                          "y": X_SPACE})),
    Case("store-other-kind-categorical", "store", run_spec(),
         r"space.y: study 'toy' already searches",
         spec_with(space={"x": X_SPACE, "y": {"type": "categorical", "choices": [0.1, 0.2]}})),
]  # fmt: skip

TRAINER_CASES = [
    Case("trainer-missing-module", "trainer", run_spec(),
         r"cannot import module 'no_such_module_xyz' .*PYTHONPATH",
         spec_with(trainer="no_such_module_xyz:Trainer")),
    Case("trainer-import-error", "trainer", run_spec(),
         r"cannot import module 'imports_missing' \(No module named 'not_there'\)",
         trainer_module("imports_missing", "import not_there\n")),
    Case("trainer-syntax-error", "trainer", run_spec(),
         r"importing module 'bad_syntax' failed with SyntaxError.*fix that module",
         trainer_module("bad_syntax", "def broken(:\n")),
    Case("trainer-raises-on-import", "trainer", run_spec(),
         r"importing module 'raises_on_import' failed with RuntimeError: boom; fix that module",
         trainer_module("raises_on_import", "raise RuntimeError('boom')\n")),
    Case("trainer-exits-on-import", "trainer", run_spec(),
         r"importing module 'exits_on_import' failed with SystemExit",
         trainer_module("exits_on_import", "import sys\nsys.exit(0)\n")),
    Case("trainer-not-a-trainer", "trainer", run_spec(),
         r"has no Trainer subclass 'Trainer'; name a class that subclasses",
         trainer_module("not_a_trainer", "class Trainer:\n    pass\n")),
    Case("trainer-no-such-class", "trainer", run_spec(), r"has no Trainer subclass 'Nope'",
         spec_with(trainer="toy_trainer:Nope")),
    Case("trainer-empty-module", "trainer", run_spec(), r"is not 'package.module:Class'",
         spec_with(trainer=":ToyTrainer")),
    Case("trainer-relative-module", "trainer", run_spec(), r"is not 'package.module:Class'",
         spec_with(trainer=".toy_trainer:ToyTrainer")),
    Case("trainer-no-class", "trainer", run_spec(), r"is not 'package.module:Class'",
         spec_with(trainer="toy_trainer:")),
    Case("trainer-unknown-name", "trainer", run_spec(), r"unknown trainer 'resnet'; use one of",
         spec_with(trainer="resnet")),
]  # fmt: skip

CASES = SPEC_CASES + NAME_CASES + VALUE_CASES + STORE_CASES + TRAINER_CASES
REFUSED = Counter(case.kind for case in CASES if case.code == 2)


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding study 'toy' with one finished trial (what each case starts from)."""
    folder = tmp_path_factory.mktemp("seed")
    (folder / "toy.yaml").write_text(spec_text())
    store = folder / "store.db"
    result = invoke(["run", str(folder / "toy.yaml"), "--trials", "1", "--storage",
                     f"sqlite:///{store}", "--no-mlflow", "--no-progress"])  # fmt: skip
    assert result.code == 0, result.stderr + result.traceback
    return store


def _prepare(case: Case, folder: Path, seeded_store: Path) -> Path:
    store = folder / "store.db"
    with sqlite3.connect(seeded_store) as source, sqlite3.connect(store) as target:
        source.backup(target)
    (folder / "toy.yaml").write_text(spec_text())
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if case.id == "store-foreign-sqlite":
        with sqlite3.connect(folder / "foreign.db") as foreign:
            foreign.execute("CREATE TABLE accounts (id INTEGER, owner TEXT)")
            foreign.execute("INSERT INTO accounts VALUES (1, 'someone')")
    return store


def _argv(case: Case, folder: Path) -> list[str]:
    replace = {"{dir}": str(folder), "{store}": f"sqlite:///{folder / 'store.db'}"}
    argv = []
    for part in case.argv:
        for key, value in replace.items():
            part = part.replace(key, value)
        argv.append(part)
    return argv


def _files_state(folder: Path) -> dict[str, Any]:
    """Every SQLite file in the case's folder with its row counts; other files by size."""
    state: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(("-wal", "-shm", ".pyc")):
            is_db = path.read_bytes()[:16] == b"SQLite format 3\x00"
            state[str(path.relative_to(folder))] = store_rows(path) if is_db else path.stat().st_size
    return state


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input(case: Case, tmp_path: Path, seeded_store: Path) -> None:
    store = _prepare(case, tmp_path, seeded_store)
    before = _files_state(tmp_path)
    sys.path.insert(0, str(tmp_path))  # the user's trainer modules
    try:
        result = invoke(_argv(case, tmp_path), env={"PYTHONDONTWRITEBYTECODE": "1", **case.env})
    finally:
        sys.path.remove(str(tmp_path))
    assert not result.traceback, result.traceback
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code == case.code, (result.code, result.stderr)
    after = _files_state(tmp_path)
    if case.code != 0:
        (line,) = result.stderr_lines
        assert line.startswith("hpsearch: error: "), line
        assert re.search(case.pattern, line), line
        assert "secret" not in result.stderr + result.stdout
        assert after == before, "the case changed the store or created files"
        return
    trials_before = before["store.db"].get("trials", 0)
    assert store_rows(store)["trials"] == trials_before + case.new_trials


def test_the_catalogue_covers_every_class() -> None:
    assert set(REFUSED) == {"spec", "name", "value", "store", "trainer"}
    assert len(CASES) == len({case.id for case in CASES})
    assert len(CASES) >= 100, len(CASES)
