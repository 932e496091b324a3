"""`lab finetune check`: the preflight of a fine-tune plan before any GPU time is spent.

The plan is finetune.py's top-level constants (read with runner.params, never executed),
with overrides. The check reports the data set's format and column mapping, the chat
template, the model's size, memory per method, the flavor that fits at the lowest cost,
and the run's time and cost; it refuses (ok = False) a plan whose data cannot be trained
on as mapped, whose template breaks assistant-only loss, or that fits no flavor asked for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..state.params import read_params
from ..errors import LabError
from ..files.yamlio import read_text
from . import data as data_mod
from . import sizing
from . import template as template_mod

TEMPLATE_SCRIPT = Path(__file__).resolve().parent.parent / "templates" / "finetune" / "finetune.py"
DEFAULTS = {"METHOD": "full", "MAX_LENGTH": 1024, "BATCH_SIZE": 1, "GRAD_ACCUM": 1, "EPOCHS": 1.0,
            "MAX_STEPS": -1, "PACKING": False, "LORA_R": 16, "LORA_TARGETS": "all-linear", "TRAIN_SPLIT": "train",
            "MESSAGES_COLUMN": "messages", "PROMPT_COLUMN": "prompt", "COMPLETION_COLUMN": "completion",
            "TEXT_COLUMN": "text", "ASSISTANT_ONLY_LOSS": True, "GRADIENT_CHECKPOINTING": True}


@dataclass
class Report:
    script: str
    plan: dict
    data: dict = field(default_factory=dict)
    template: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    tokens: float | None = None
    flavors: list[dict] = field(default_factory=list)
    choice: dict | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "script": self.script, "plan": self.plan, "data": self.data,
                "template": self.template, "model": self.model, "memory": self.memory, "tokens": self.tokens,
                "choice": self.choice, "flavors": self.flavors, "problems": self.problems, "notes": self.notes}


def read_plan(script: Path | None, overrides: dict) -> tuple[dict, str]:
    """The plan's constants (finetune.py's, or the template's when there is none) with overrides."""
    path = script if script is not None else TEMPLATE_SCRIPT
    if not path.is_file():
        raise LabError("no such file (lab init --template finetune writes a finetune.py)", str(path))
    plan = {**DEFAULTS, **read_params(read_text(path), str(path)), **overrides}
    method = plan.get("METHOD")
    if method not in ("full", "lora"):
        raise LabError(f"METHOD = {method!r}: choose full or lora", str(path), "METHOD")
    return plan, str(path) if script is not None else "the finetune template's defaults"


def run_check(plan: dict, shown: str, flavor: str | None = None, flavors_file: Path | None = None,
              params: float | None = None) -> Report:
    report = Report(shown, {k: v for k, v in plan.items() if k != "CHAT_TEMPLATE"})
    offline = data_mod.hub_offline()
    info = data_mod.inspect(plan)
    report.data = info.to_dict()
    _judge(report, info.status, info.message, "data")
    tpl = template_mod.inspect(plan, info.format, info.sample, offline)
    report.template = tpl.to_dict()
    _judge(report, tpl.status, tpl.message, "template")
    shape, source = sizing.model_shape(plan, offline)
    count = int(params) if params else shape.params() if shape else None
    if count is None:
        report.problems.append(f"model: {source}")
        return report
    report.model = {"name": plan.get("MODEL"), "params": count, "source": "--params" if params else source}
    report.tokens = sizing.trained_tokens(plan, info.rows, info.chars_per_example,
                                          sizing.chars_per_token(str(plan.get("MODEL"))))
    _size(report, plan, count, None if params else shape, flavor, flavors_file)
    return report


def _judge(report: Report, status: str, message: str, part: str) -> None:
    if status == "error":
        report.problems.append(f"{part}: {message}")
    elif status == "unknown" and message:
        report.notes.append(f"{part}: {message}")


def _size(report: Report, plan: dict, count: int, shape, flavor: str | None, flavors_file: Path | None) -> None:
    table = sizing.load_flavors(flavors_file)
    for method in ("full", "lora"):
        report.memory[method] = sizing.memory(count, shape, plan, method, bf16=True, gpu=True).to_dict()
    mfu, startup = float(table.get("mfu", 0.3)), float(table.get("startup_minutes", 0))
    fits = [sizing.fit(f, mfu, count, shape, plan, report.tokens, startup) for f in table["flavors"]]
    report.flavors = [f.to_dict() for f in fits]
    if report.tokens is None:
        report.notes.append("time and cost: unknown (the data set's size is unknown)")
    if flavor:
        _judge_flavor(report, plan, fits, flavor, count, shape)
        return
    fitting = [f for f in fits if f.fits]
    if not fitting:
        report.problems.append(f"no flavor in {table.get('source', 'the table')} fits "
                               f"{_need(report, plan)}{_lora_hint(plan, count, shape)}")
        return
    per_flop = {f["name"]: f["usd_per_hour"] / (f["tflops"] * max(1, f["gpus"])) for f in table["flavors"]}
    # the cheapest run; when its length is unknown, the cheapest compute (what a run of any length costs)
    report.choice = min(fitting, key=lambda f: f.cost if f.cost is not None else per_flop[f.flavor]).to_dict()


def _judge_flavor(report: Report, plan: dict, fits: list, flavor: str, count: int, shape) -> None:
    chosen = next((f for f in fits if f.flavor == flavor), None)
    if chosen is None:
        raise LabError(f"unknown flavor {flavor!r} (have: {', '.join(f.flavor for f in fits)})", field="flavor")
    report.choice = chosen.to_dict()
    if chosen.fits:
        return
    if chosen.memory_gb > chosen.capacity_gb:
        bigger = [f.flavor for f in fits if f.fits][:1]
        report.problems.append(
            f"{plan['METHOD']} fine-tune of {plan['MODEL']} needs ~{chosen.memory_gb:.1f} GB per device; {flavor} "
            f"offers {chosen.capacity_gb:.1f} GB usable" + _lora_hint(plan, count, shape)
            + (f"; or use {bigger[0]}" if bigger else ""))
    else:
        report.problems.append(f"{flavor} is a CPU flavor and this run would take ~{chosen.hours:.1f} h there; "
                               "use a GPU flavor")


def _need(report: Report, plan: dict) -> str:
    return f"a {plan['METHOD']} fine-tune needing ~{report.memory[plan['METHOD']]['total_gb']:.1f} GB per GPU"


def _lora_hint(plan: dict, count: int, shape) -> str:
    if plan["METHOD"] != "full":
        return ""
    lora = sizing.memory(count, shape, plan, "lora", bf16=True, gpu=True).total_gb
    return f"; METHOD = \"lora\" needs ~{lora:.1f} GB"


# -- human output -------------------------------------------------------------------------------------
def lines(report: Report) -> list[str]:
    out = [f"plan: {report.script}: {report.plan.get('METHOD')} fine-tune of {report.plan.get('MODEL')} "
           f"on {report.plan.get('DATASET')}" + (f" ({report.plan['DATASET_CONFIG']})"
                                                if report.plan.get("DATASET_CONFIG") else "")]
    out += _data_lines(report.data) + _template_lines(report.template)
    if report.model:
        out.append(f"model: {_si(report.model['params'])} parameters ({report.model['source']})")
        for method, mem in report.memory.items():
            out.append(f"memory ({method}, bf16): {mem['total_gb']:.1f} GB per GPU = weights {mem['weights_gb']:.1f}"
                       f" + grads {mem['grads_gb']:.1f} + optimizer {mem['optimizer_gb']:.1f} + activations "
                       f"{mem['activations_gb']:.1f} + overhead {mem['overhead_gb']:.1f}")
    if report.tokens:
        out.append(f"tokens: ~{_si(report.tokens)} trained")
    if report.choice:
        out.append("flavor: " + _flavor_line(report.choice))
    out += [f"note: {n}" for n in report.notes]
    out += [f"error: {p}" for p in report.problems]
    return out


def _data_lines(data: dict) -> list[str]:
    if data.get("format") is None:  # the reason is in a note or an error below
        return [f"data: {'columns not checked' if data.get('status') == 'unknown' else 'refused'}"]
    mapping = ", ".join(f"{old} -> {new}" for old, new in data["mapping"].items())
    rows = f"{data['rows']} rows, " if data.get("rows") is not None else ""
    return [f"data: {data['source']}, {rows}format {data['format']} ({mapping})"]


def _template_lines(tpl: dict) -> list[str]:
    if tpl.get("status") == "unknown":
        return ["template: not checked"]
    if tpl.get("status") == "unused":
        return [f"template: {tpl['message']}"]
    marks = "has {% generation %} markers" if tpl.get("has_markers") else "no {% generation %} markers"
    if tpl.get("trl_training_template"):
        marks += f" (TRL trains with its {tpl['trl_training_template']})"
    out = [f"template: {marks} ({tpl.get('source')})"]
    if tpl.get("rendered"):
        out.append(f"template sample: {tpl['rendered'][:160]!r}")
    return out


def _flavor_line(choice: dict) -> str:
    text = f"{choice['flavor']} ({choice['memory_gb']:.1f} of {choice['capacity_gb']:.1f} GB usable)"
    if choice.get("hours") is not None:
        text += f", ~{_duration(choice['hours'])}, ~${choice['cost']:.2f}"
        if choice["fits"]:
            timeout = max(1, math.ceil(choice["hours"] * 1.5))
            text += f"; hf jobs uv run --flavor {choice['flavor']} --timeout {timeout}h --secrets HF_TOKEN finetune.py"
    return text


def _duration(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def _si(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"
