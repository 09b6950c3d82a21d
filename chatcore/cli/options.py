"""Flag groups shared by the commands that load a model or sample an answer."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from chatcore.core.params import GenerationParams
from chatcore.core.settings import Settings


def model_options(command: Callable) -> Callable:
    """--model --device --dtype --quant --kv-cache --allow-pickle --trust-remote-code."""
    decorators = [
        click.option("--model", "-m", help="Model: smollm2-135m-instruct (default), a Hugging Face id, a directory or a .gguf file."),
        click.option("--device", help="auto (default), cpu, cuda, cuda:N or mps."),
        click.option("--dtype", help="auto (default), float32, bfloat16 or float16."),
        click.option("--quant", type=click.Choice(["auto", "none", "int8", "int4"]),
                     help="Weight quantization for Llama-family models: auto (default: fastest within 2% perplexity), none, int8 or int4."),
        click.option("--kv-cache", type=click.Choice(["int8", "bfloat16"]),
                     help="How the CPU decoder keeps keys and values: int8 (default: half the memory) or bfloat16."),
        click.option("--allow-pickle", is_flag=True, default=None, help="Allow non-safetensors weights (runs pickle code from the model's author)."),
        click.option("--trust-remote-code", is_flag=True, default=None, help="Allow Python code shipped with a hub model."),
    ]
    return functools.reduce(lambda cmd, deco: deco(cmd), reversed(decorators), command)


def backend_options(command: Callable) -> Callable:
    """--backend --base-url --backend-api-key: answer through an OpenAI-compatible server instead."""
    decorators = [
        click.option("--backend", type=click.Choice(["local", "openai"]),
                     help="local (default): decode here; openai: use the server at --base-url."),
        click.option("--base-url", help="An OpenAI-compatible server, e.g. http://gpu-host:8000/v1 (vLLM, TGI, Ollama, llama.cpp, ChatCore)."),
        click.option("--backend-api-key", help="The key that server expects (or CHATCORE_BACKEND_API_KEY)."),
    ]
    return functools.reduce(lambda cmd, deco: deco(cmd), reversed(decorators), command)


def sampling_options(command: Callable) -> Callable:
    """--temperature --top-p --top-k --max-tokens --repetition-penalty --seed --stop --system."""
    # Values are read as text and validated by GenerationParams, so every message names the parameter
    # the same way in the CLI, the web app and the API.
    decorators = [
        click.option("--system", "-s", help="System prompt."),
        click.option("--temperature", "-t", help="0 to 2; 0 is greedy (deterministic)."),
        click.option("--top-p", help="Nucleus sampling, in (0, 1]."),
        click.option("--top-k", help="Keep the k most likely tokens; 0 turns it off."),
        click.option("--max-tokens", "max_new_tokens", help="Most new tokens to generate (1 up to the context window)."),
        click.option("--repetition-penalty", help="1 (off) to 2."),
        click.option("--seed", help="Random seed, for answers you can reproduce."),
        click.option("--stop", multiple=True, help="Stop when this text appears (repeatable)."),
    ]
    return functools.reduce(lambda cmd, deco: deco(cmd), reversed(decorators), command)


def settings_from(ctx: click.Context, options: dict[str, Any]) -> Settings:
    """The context's settings with the model flags applied."""
    keys = ("model", "device", "dtype", "quant", "kv_cache", "allow_pickle", "trust_remote_code", "backend", "base_url", "backend_api_key")
    return ctx.obj.with_overrides(**{k: options.get(k) for k in keys})


def params_from(options: dict[str, Any], defaults: dict[str, Any] | None = None) -> GenerationParams:
    """Validated sampling parameters from the flags, over optional template defaults."""
    keys = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed")
    values = dict(defaults or {})
    values.update({k: options[k] for k in keys if options.get(k) is not None})
    if options.get("stop"):
        values["stop"] = list(options["stop"])
    return GenerationParams.create(**values)
