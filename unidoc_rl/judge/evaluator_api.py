"""Judge service: `POST /eval` scores generated answers with an LLM judge behind any OpenAI-compatible endpoint.

Request:  {"prompts": [{"query": str, "reference_answer": str, "generated_answer": str}, ...], "bs": int}
Response: [float, ...], one score in [0, 1] per prompt, in order.

Prompts are judged `bs` at a time (each chunk concurrently, within the judge's concurrency bound). A prompt the judge
cannot grade (endpoint down, timeouts, garbage) is scored by the rule-based fallback; `GET /health` reports how many.

    python -m unidoc_rl.judge.evaluator_api --llm-base-url http://127.0.0.1:8000/v1 --model Qwen2.5-72B-Instruct
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from unidoc_rl.judge.client import OpenAIJudge
from unidoc_rl.judge.settings import JudgeBackend, JudgeSettings

logger = logging.getLogger(__name__)

MAX_PROMPTS_PER_REQUEST = 4096
MAX_TEXT_CHARS = 32_000


class EvalPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(max_length=MAX_TEXT_CHARS)
    reference_answer: str = Field(max_length=MAX_TEXT_CHARS)
    generated_answer: str = Field(max_length=MAX_TEXT_CHARS)


class EvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompts: list[EvalPrompt] = Field(min_length=1, max_length=MAX_PROMPTS_PER_REQUEST)
    bs: int = Field(default=32, ge=1, le=MAX_PROMPTS_PER_REQUEST, description="prompts judged concurrently per chunk")


def create_app(judge: OpenAIJudge) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await judge.aclose()

    app = FastAPI(title="UniDoc-RL judge service", lifespan=lifespan)

    @app.post("/eval", response_model=list[float])
    async def evaluate(request: EvalRequest) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(request.prompts), request.bs):
            chunk = request.prompts[start : start + request.bs]
            verdicts = await judge.judge_many([(p.query, p.reference_answer, p.generated_answer) for p in chunk])
            scores.extend(verdict.score for verdict in verdicts)
        return scores

    @app.get("/health")
    async def health() -> dict:
        stats = judge.stats
        return {
            "status": "ok",
            "model": judge.settings.model,
            "llm_base_url": judge.settings.base_url,
            "prompt_template": judge.template.name,
            "verdicts": stats.verdicts,
            "cache_hits": stats.cache_hits,
            "fallbacks": stats.fallbacks,
            "retries": stats.retries,
        }

    return app


def build_parser() -> argparse.ArgumentParser:
    defaults = JudgeSettings()
    parser = argparse.ArgumentParser(
        prog="python -m unidoc_rl.judge.evaluator_api",
        description="Serve POST /eval: score answers with an LLM judge behind an OpenAI-compatible endpoint.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--llm-base-url", default=defaults.base_url, help="OpenAI-compatible base URL, ending in /v1")
    parser.add_argument("--model", default=defaults.model, help="model name sent to the endpoint")
    parser.add_argument("--api-key-env", default=defaults.api_key_env, help="environment variable with the API key")
    parser.add_argument("--prompt-template", default=defaults.prompt_template, help="template name or file path")
    parser.add_argument("--max-concurrency", type=int, default=defaults.max_concurrency)
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s, help="per attempt")
    parser.add_argument("--max-retries", type=int, default=defaults.max_retries)
    parser.add_argument("--fallback-scorer", choices=["anls", "exact_match"], default=defaults.fallback_scorer.value)
    parser.add_argument("--log-level", default="INFO")
    return parser


def settings_from_args(args: argparse.Namespace) -> JudgeSettings:
    return JudgeSettings(
        backend=JudgeBackend.OPENAI,
        base_url=args.llm_base_url,
        model=args.model,
        api_key_env=args.api_key_env,
        prompt_template=args.prompt_template,
        max_concurrency=args.max_concurrency,
        timeout_s=args.timeout_s,
        max_retries=args.max_retries,
        fallback_scorer=args.fallback_scorer,
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from unidoc_rl.http_server import run_server

    app = create_app(OpenAIJudge(settings_from_args(args)))
    gc.freeze()  # the start-up heap lives as long as the service: full collections need not walk it mid-request
    logger.info(
        "judge service on http://%s:%d, judging with %s at %s", args.host, args.port, args.model, args.llm_base_url
    )
    run_server(app, args.host, args.port, args.log_level.lower())


if __name__ == "__main__":
    main()
