"""Teacher trajectories for SFT: one JSONL line per unified sample, rendered exactly as the RL agent renders them.

    python synthetic_data/generate_cot_data.py --data-path data.json --output-path out.jsonl \\
      --search-engine-url http://127.0.0.1:8001/search --layout-parser-url http://127.0.0.1:30000 \\
      --llm-engine-url http://127.0.0.1:9009/v1 --vllm-engine-url http://127.0.0.1:9000/v1 \\
      --enable-rerank --enable-crop

The agent's settings (system prompt, candidates per search, budgets, box convention, display pixel budget) are
read from the `unidoc_agent` section of `--agent-config` (default: the GRPO config), so SFT and RL agree.
See docs/sft.md for the stages, the output files and resuming.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

from unidoc_rl.data.prepare import load_samples
from unidoc_rl.env.agent_settings import AgentSettings
from unidoc_rl.env.vision import CoordinateConvention, PixelBudget
from unidoc_rl.synthesis.layout import MinerULayoutParser
from unidoc_rl.synthesis.runner import parse_samples, run_all
from unidoc_rl.synthesis.services import AccountedSearch, ChatService, RetryPolicy
from unidoc_rl.synthesis.synthesize import LayoutSource, SynthesisOptions, Synthesizer
from unidoc_rl.synthesis.teacher import Teacher

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_AGENT_CONFIG = REPO_ROOT / "configs" / "unidoc_grpo.yaml"
logger = logging.getLogger("synthetic_data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Generate teacher trajectories (search, select, crop, answer) as the RL agent renders them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = parser.add_argument_group("data")
    io.add_argument("--data-path", type=Path, required=True, help="unified samples: a JSON list or JSON Lines")
    io.add_argument("--output-path", type=Path, required=True, help="trajectories JSONL (appended to, resumable)")
    io.add_argument("--retry-failed", action="store_true", help="retry samples whose last attempt failed")
    io.add_argument("--limit", type=int, default=None, help="only the first N samples")

    services = parser.add_argument_group("services")
    services.add_argument("--search-engine-url", required=True, help="search service root or its /search endpoint")
    services.add_argument("--vllm-engine-url", required=True, help="teacher VLM, OpenAI-compatible base URL (/v1)")
    services.add_argument("--llm-engine-url", default=None, help="teacher text LLM (/v1); default: the VLM")
    services.add_argument("--vllm-model", default=None, help="model name at the VLM URL; default: its first model")
    services.add_argument("--llm-model", default=None, help="model name at the LLM URL; default: its first model")
    services.add_argument(
        "--layout-parser-url", default=None, help="MinerU server (mineru-api); default: the PDF text layer"
    )
    services.add_argument("--layout-backend", default="pipeline", help="MinerU backend field of the request")
    services.add_argument("--layout-server-url", default=None, help="MinerU server_url field (vlm-*-client backends)")
    services.add_argument("--pdf-dir", type=Path, default=None, help="PDFs of the corpus (text-layer layout)")
    services.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable with the API key")
    services.add_argument("--search-api-key-env", default="UNIDOC_SEARCH_API_KEY", help="search service API key")

    stages = parser.add_argument_group("stages")
    stages.add_argument("--enable-rerank", action="store_true", help="rerank candidates with balanced orders")
    stages.add_argument("--enable-crop", action="store_true", help="let the teacher crop and zoom a region")
    stages.add_argument("--max-searches", type=int, default=2, help="search rounds before the teacher must answer")
    stages.add_argument("--temperature", type=float, default=0.0, help="teacher sampling temperature")
    stages.add_argument("--max-tokens", type=int, default=1024, help="most tokens per teacher reply")

    agent = parser.add_argument_group("agent (must match RL)")
    agent.add_argument("--agent-config", type=Path, default=DEFAULT_AGENT_CONFIG, help="yaml with `unidoc_agent`")
    agent.add_argument("--min-pixels", type=int, default=None, help="override unidoc_agent.min_pixels")
    agent.add_argument("--max-pixels", type=int, default=None, help="override unidoc_agent.max_pixels")
    agent.add_argument("--convention", choices=[c.value for c in CoordinateConvention], default=None)
    agent.add_argument(
        "--prompt-template", default=None, help="override unidoc_agent.prompt_template (template name or .jinja path)"
    )

    robust = parser.add_argument_group("robustness")
    robust.add_argument("--concurrency", type=int, default=8, help="samples in flight")
    robust.add_argument("--timeout", type=float, default=120.0, help="seconds per service request")
    robust.add_argument("--retries", type=int, default=3, help="retries per request (timeouts, 5xx, connection)")
    robust.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds (doubles)")
    robust.add_argument("--json-retries", type=int, default=2, help="re-asks when a reply is not the JSON asked for")
    robust.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def load_agent_settings(path: Path, args: argparse.Namespace) -> tuple[AgentSettings, PixelBudget]:
    from omegaconf import OmegaConf

    section = OmegaConf.to_container(OmegaConf.load(path), resolve=False).get("unidoc_agent") or {}
    settings = AgentSettings.from_mapping(section)
    overrides = {
        name: value
        for name, value in (("min_pixels", args.min_pixels), ("max_pixels", args.max_pixels))
        if value is not None
    }
    if args.convention:
        overrides["convention"] = CoordinateConvention(args.convention)
    if args.prompt_template:
        overrides["prompt_template"] = args.prompt_template
    try:
        settings = replace(settings, **overrides)
    except (OSError, ValueError) as error:  # a missing or malformed prompt template
        raise SystemExit(str(error)) from None
    if settings.min_pixels is None or settings.max_pixels is None:
        raise SystemExit(
            f"{path}: unidoc_agent.min_pixels/max_pixels are unset (they default to the policy's processor in RL); "
            "give --min-pixels and --max-pixels, the policy processor's bounds"
        )
    return settings, PixelBudget(settings.min_pixels, settings.max_pixels)


def read_samples(path: Path, limit: int | None) -> list:
    try:
        samples = load_samples(path)[:limit]
        parse_samples(samples)
    except (OSError, ValueError) as error:
        raise SystemExit(f"cannot use the samples in {path}: {error}") from None
    return samples


async def _run(args: argparse.Namespace) -> dict:
    samples = read_samples(args.data_path, args.limit)
    settings, budget = load_agent_settings(args.agent_config, args)
    policy = RetryPolicy(
        timeout_s=args.timeout, retries=args.retries, backoff_s=args.backoff, json_retries=args.json_retries
    )
    api_key = os.environ.get(args.api_key_env, "EMPTY")
    vlm = ChatService(args.vllm_engine_url, args.vllm_model, policy, api_key, args.temperature, args.max_tokens)
    llm = ChatService(
        args.llm_engine_url or args.vllm_engine_url,
        args.llm_model if args.llm_engine_url else (args.llm_model or args.vllm_model),
        policy,
        api_key,
        args.temperature,
        args.max_tokens,
    )
    for service in (vlm, llm):
        await service.resolve_model()
    search = AccountedSearch(args.search_engine_url, policy, os.environ.get(args.search_api_key_env))
    parser = None
    if args.enable_crop and args.layout_parser_url:
        parser = MinerULayoutParser(args.layout_parser_url, policy, args.layout_backend, args.layout_server_url)
    layout = LayoutSource(parser, args.pdf_dir) if args.enable_crop else None
    options = SynthesisOptions(args.enable_rerank, args.enable_crop, args.max_searches)
    synthesizer = Synthesizer(Teacher(vlm, llm), search, settings, budget, options, layout)
    try:
        summary = await run_all(
            synthesizer, samples, args.output_path, args.concurrency, args.retry_failed, not args.no_progress
        )
    finally:
        for closable in (vlm, llm, search, parser):
            if closable is not None:
                await closable.aclose()
    return summary.to_dict()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.enable_crop and not (args.layout_parser_url or args.pdf_dir):
        raise SystemExit("--enable-crop needs --layout-parser-url (MinerU) or --pdf-dir (PDF text layer)")
    summary = asyncio.run(_run(args))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
