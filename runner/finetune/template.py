"""The chat template of a fine-tune plan: where it is, whether it marks assistant turns, a rendering.

Assistant-only loss on `messages` data needs `{% generation %}` markers in the template, or a
template TRL knows and swaps for its training version (TRL ships those under trl/chat_templates/).
Rendering uses a sandboxed Jinja environment with the generation tags removed, so no tokenizer
library is needed.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

MARKERS = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")
EXAMPLE = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]


@dataclass
class TemplateInfo:
    status: str = "ok"          # ok | error | unknown | unused
    message: str = ""
    source: str = ""
    has_markers: bool | None = None
    trl_training_template: str | None = None  # the TRL template that replaces it for training
    rendered: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def inspect(plan: dict, fmt: str | None, sample: dict | None, offline: bool) -> TemplateInfo:
    if fmt == "text" or (fmt == "prompt-completion" and not _chat(sample)):
        return TemplateInfo("unused", "plain-text data: no chat template is applied")
    template, source = find_template(plan, offline)
    if template is None:
        return TemplateInfo("unknown", source)
    info = TemplateInfo(source=source, has_markers=bool(MARKERS.search(template)))
    info.rendered, error = render(template, _messages(sample))
    if info.rendered is None and error is None:
        info.status, info.message = "unknown", "not rendered: jinja2 is missing (pip install 'benchlab[finetune]')"
    if error:
        info.status, info.message = "error", f"the chat template does not render: {error}"
        return info
    if fmt == "messages" and plan.get("ASSISTANT_ONLY_LOSS", True) and not info.has_markers:
        info.trl_training_template = trl_training_template(template)
        if not info.trl_training_template:
            info.status = "error"
            info.message = ("the chat template has no {% generation %} markers and TRL has no training version "
                            "of it, so assistant-only loss fails: set ASSISTANT_ONLY_LOSS = False, add the "
                            "markers, or convert the data to prompt/completion")
    return info


def _chat(sample: dict | None) -> bool:
    return bool(sample) and isinstance(sample.get("prompt"), list)


def _messages(sample: dict | None) -> list[dict]:
    if sample and isinstance(sample.get("messages"), list):
        return sample["messages"]
    if sample and isinstance(sample.get("prompt"), list):
        return sample["prompt"] + list(sample.get("completion") or [])
    return EXAMPLE


def find_template(plan: dict, offline: bool) -> tuple[str | None, str]:
    """(template, where from); (None, why) when it cannot be read here."""
    model = str(plan.get("MODEL"))
    if model == "tiny-qwen3":
        return plan.get("CHAT_TEMPLATE"), "finetune.py CHAT_TEMPLATE (built-in tokenizer)"
    folder = Path(model)
    if folder.is_dir():
        return _from_files(lambda name: folder / name, str(folder))
    return _from_hub(model, offline)


def _from_files(locate, shown: str) -> tuple[str | None, str]:
    jinja = locate("chat_template.jinja")
    if jinja and Path(jinja).is_file():
        return Path(jinja).read_text(encoding="utf-8"), f"{shown}/chat_template.jinja"
    config = locate("tokenizer_config.json")
    if config and Path(config).is_file():
        template = json.loads(Path(config).read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, list):  # named variants: the default one is used
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if template:
            return template, f"{shown}/tokenizer_config.json"
    return None, f"{shown} has no chat template (chat_template.jinja or tokenizer_config.json)"


def _from_hub(model: str, offline: bool) -> tuple[str | None, str]:
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        return None, "huggingface_hub is not installed"

    def locate(name):
        cached = try_to_load_from_cache(model, name)
        if isinstance(cached, str) or offline:
            return cached if isinstance(cached, str) else None
        try:
            return hf_hub_download(model, name, etag_timeout=10)
        except Exception:  # the file does not exist, or no network
            return None

    template, source = _from_files(locate, model)
    if template is None and offline:
        return None, f"offline (HF_HUB_OFFLINE is set) and {model}'s tokenizer is not cached: template not checked"
    return template, source


def render(template: str, messages: list[dict]) -> tuple[str | None, str | None]:
    """(text, None) or (None, error) for the template applied to `messages`."""
    try:  # jinja2 comes with the finetune extra (transformers), not with benchlab itself
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None, None

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda value, **kw: json.dumps(value, ensure_ascii=False, **kw)
    try:
        return env.from_string(MARKERS.sub("", template)).render(
            messages=messages, add_generation_prompt=False, bos_token="", eos_token=""), None
    except TemplateError as exc:
        return None, str(exc) or type(exc).__name__


def trl_training_template(template: str) -> str | None:
    """The name of TRL's training template that replaces this one, if TRL ships it."""
    try:
        folder = resources.files("trl") / "chat_templates"
    except ModuleNotFoundError:
        return None
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".jinja") and not name.endswith("_training.jinja") and entry.read_text() == template:
            training = name.replace(".jinja", "_training.jinja")
            return training if (folder / training).is_file() else None
    return None
