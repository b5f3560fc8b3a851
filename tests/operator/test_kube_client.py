"""The operator's API transport: credentials from either key the client stores them under,
throttling (429) retried after the server's Retry-After, errors carrying the server's Status."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import kubernetes.client
import pytest
from aiohttp import web
from kubepeft_operator import kube as kube_module
from kubepeft_operator.kube import KubeApi, KubeError, authorization_header

Handler = Callable[[web.Request], Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Any]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def configuration(host: str, **api_key: str) -> kubernetes.client.Configuration:
    config = kubernetes.client.Configuration()
    config.host = host
    config.api_key = dict(api_key)
    return config


@pytest.mark.parametrize(
    "api_key",
    [{"authorization": "Bearer tok-1"}, {"BearerToken": "tok-1"}, {"authorization": "tok-1"}],
    ids=["kubeconfig-36.0.0-style", "BearerToken", "bare-token"],
)
def test_the_token_is_sent_whichever_key_holds_it(api_key: dict[str, str]) -> None:
    """kubernetes==36.0.0 stored the token under 'authorization' and sent it under 'BearerToken'
    only: every request went out anonymous. The header is built from either."""
    assert authorization_header(configuration("http://x", **api_key)) == "Bearer tok-1"


async def test_requests_carry_the_token_and_a_user_agent(serve: Callable[[Handler], Any]) -> None:
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return web.json_response({"ok": True})

    kube = KubeApi(configuration(await serve(handler), authorization="Bearer tok-2"))
    try:
        assert await kube.request("GET", "/api/v1/namespaces/a/pods") == {"ok": True}
    finally:
        await kube.close()
    assert seen["Authorization"] == "Bearer tok-2" and seen["User-Agent"] == kube_module.USER_AGENT


async def test_throttling_is_retried_after_retry_after_then_reported(
    serve: Callable[[Handler], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls <= 2 or request.path == "/always":
            status = {"kind": "Status", "reason": "TooManyRequests", "message": "too many requests"}
            return web.json_response(status, status=429, headers={"Retry-After": "0.05"})
        return web.json_response({"ok": True})

    methods: list[str] = []
    kube = KubeApi(configuration(await serve(handler)), on_request=methods.append)
    try:
        assert await kube.request("POST", "/x", {"a": 1}) == {"ok": True}
        assert calls == 3 and methods == ["POST"] * 3  # each try is counted as a request
        monkeypatch.setattr(kube_module, "MAX_THROTTLED_RETRIES", 2)
        with pytest.raises(KubeError) as throttled:
            await kube.request("GET", "/always")
    finally:
        await kube.close()
    assert throttled.value.status == 429 and throttled.value.reason == "TooManyRequests"


async def test_errors_carry_the_servers_reason_message_and_causes(serve: Callable[[Handler], Any]) -> None:
    async def handler(request: web.Request) -> web.Response:
        status = {
            "kind": "Status",
            "reason": "Forbidden",
            "message": 'pods "p" is forbidden: unable to create new content in namespace a '
            "because it is being terminated",
            "details": {"causes": [{"reason": "NamespaceTerminating", "message": "namespace a is being terminated"}]},
        }
        return web.json_response(status, status=403)

    kube = KubeApi(configuration(await serve(handler)))
    try:
        with pytest.raises(KubeError) as refused:
            await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}})
    finally:
        await kube.close()
    assert refused.value.status == 403 and refused.value.causes == ("NamespaceTerminating",)
    assert refused.value.namespace_terminating
