"""Remote backends: Ollama daemons (``kind = "ollama"``), OpenAI-compatible services
(``kind = "openai"``: OpenRouter, vLLM, llama.cpp's server, LM Studio) and Anthropic's API
(``kind = "anthropic"``).

A remote backend owns its replicas (one per URL, each with a circuit breaker and a count of
requests in flight), a concurrency limit with a bounded queue, and its catalogue: the models
it serves, listed in the configuration or discovered from the upstream and refreshed
periodically, filtered, aliased, and named the Ollama way (``vendor/model`` becomes
``vendor/model:latest``) while requests use the upstream's own id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from modelgarden.backends.base import Api, BackendRequest, BackendResponse, described
from modelgarden.breaker import BreakerState, CircuitBreaker
from modelgarden.config.backends import BackendConfig
from modelgarden.errors import (
    BackendUnavailable,
    BadRequest,
    GardenError,
    InvalidModelName,
    ModelNotFound,
)
from modelgarden.resilience import Limiter, backoff
from modelgarden.store.names import ModelName
from modelgarden.tasks import cancel_and_wait
from modelgarden.upstream_http import iter_body, new_session, status_error
from modelgarden.wire.ollama import ListModel, ModelDetails, PsModel, ShowResponse

if TYPE_CHECKING:
    from modelgarden.telemetry.tracing import Upstream

log = structlog.get_logger(__name__)
RETRYABLE = frozenset({429, 500, 502, 503, 504, 529})
#: The end of Ollama's refusal of ``think`` for a model that cannot think.
THINKLESS = "does not support thinking"


#: How long a model that refused ``think`` is believed unable to think (it may be replaced).
THINKLESS_FOR = 300.0


class RelaxedThink:
    """Owns what an Ollama upstream said of ``think``: ``think`` that a model refuses is
    dropped and the request sent again when the client's API sends it to every model
    (``relax_think``), as Ollama itself does for Claude Code. The models that refused are
    remembered for :data:`THINKLESS_FOR`, so their next requests go once, without it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._thinkless: dict[str, float] = {}  # model -> until when it is believed so

    async def send(
        self,
        send: Callable[[BackendRequest], Awaitable[BackendResponse]],
        request: BackendRequest,
    ) -> BackendResponse:
        """Send ``request`` with ``send``, relaxing ``think`` as the upstream requires."""
        if not (request.relax_think and "think" in request.body):
            return await send(request)
        if self._thinkless.get(request.model, 0.0) > self.clock():
            return await send(_without_think(request))
        try:
            return await send(request)
        except BadRequest as exc:
            if THINKLESS not in exc.message:
                raise
        if len(self._thinkless) >= 4096:
            self._thinkless.clear()
        self._thinkless[request.model] = self.clock() + THINKLESS_FOR
        return await send(_without_think(request))


def _without_think(request: BackendRequest) -> BackendRequest:
    body = {k: v for k, v in request.body.items() if k != "think"}
    return replace(request, body=body, relax_think=False)


class Replica:
    """One URL of a backend: its breaker and how many requests it has in flight."""

    def __init__(self, url: str, breaker: CircuitBreaker) -> None:
        self.url = url
        self.breaker = breaker
        self.outstanding = 0
        #: The last active health probe's verdict (``None`` before the first).
        self.healthy: bool | None = None


def display_name(upstream_id: str) -> str | None:
    """The Ollama-style name of an upstream model id, or ``None`` if it cannot be one."""
    try:
        return str(ModelName.parse(upstream_id))
    except InvalidModelName:
        return None


class RemoteBackend:
    """Owns one remote service: replicas, limits, catalogue, and the HTTP relay to it."""

    kind = "remote"
    apis: frozenset[Api] = frozenset()
    #: What an active health probe GETs, unless the configuration names a path.
    health_path = "/"
    #: What its models can do, when the upstream does not say.
    capabilities: tuple[str, ...] = ("completion", "tools")

    def __init__(self, config: BackendConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = config.name
        self.config = config
        if config.apis:
            self.apis = frozenset(Api(a) for a in config.apis)
        #: What the breakers read the time from (monotonic seconds; a fake one in tests).
        self.clock = clock
        #: ``think`` dropped for models that refuse it (Ollama and Modal upstreams).
        self.relaxed = RelaxedThink(clock)
        self.replicas = [Replica(url, self.breaker()) for url in config.urls]
        self.limiter = Limiter(config.max_concurrency, config.max_queue)
        self._ids: dict[str, str] = {}
        self._entries: dict[str, ListModel] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: Built once: the upstream headers, and each endpoint's parsed URL per replica.
        self._headers: CIMultiDictProxy[str] | None = None
        self._urls: dict[tuple[str, Api, str], URL] = {}

    def breaker(self) -> CircuitBreaker:
        """A new replica's circuit breaker, as configured."""
        return CircuitBreaker(
            self.config.breaker_failures, self.config.breaker_cooldown, self.clock
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open connections, read the catalogue once, and keep refreshing it."""
        self._session = new_session(connect_timeout=self.config.timeouts.connect)
        await self.refresh()
        if self.config.models is None:
            self._tasks.append(asyncio.create_task(self._every(self.config.refresh, self.refresh)))
        if self.config.health_interval > 0:
            self._tasks.append(
                asyncio.create_task(self._every(self.config.health_interval, self.check_health))
            )

    async def close(self) -> None:
        """Stop refreshing and probing, and close connections."""
        await cancel_and_wait(*self._tasks)
        if self._session is not None:
            await self._session.close()

    @staticmethod
    async def _every(seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            await job()

    async def check_health(self) -> None:
        """Probe every replica at once; each breaker learns the verdict.

        A replica that stops answering opens its breaker without any client paying for it
        (after ``breaker_failures`` probes), and one that comes back closes it at once.
        """
        await asyncio.gather(*(self._probe(r) for r in self.replicas))

    async def _probe(self, replica: Replica) -> None:
        assert self._session is not None
        url = replica.url + (self.config.health_path or self.health_path)
        try:
            async with asyncio.timeout(self.config.timeouts.connect):
                async with self._session.get(url, headers=self.headers()) as response:
                    healthy = response.status < 500
        except (aiohttp.ClientError, OSError, TimeoutError):
            healthy = False
        if healthy and replica.healthy is False:
            log.info("backend replica recovered", backend=self.name, url=replica.url)
        elif not healthy and replica.healthy is not False:
            log.warning("backend replica unhealthy", backend=self.name, url=replica.url)
        replica.healthy = healthy
        if healthy:
            replica.breaker.success()
        else:
            replica.breaker.failure()

    # -- catalogue ---------------------------------------------------------------------------

    async def discover(self) -> list[tuple[str, ListModel | None]]:
        """The upstream's model ids (with its own list entry when it has one)."""
        raise NotImplementedError

    async def refresh(self) -> None:
        """Rebuild the catalogue; on failure keep the last one and note the error."""
        try:
            if self.config.models is not None:
                found: list[tuple[str, ListModel | None]] = [(m, None) for m in self.config.models]
            else:
                found = await self.discover()
        except GardenError as exc:
            log.warning("model list unavailable", backend=self.name, error=exc.message)
            return
        ids: dict[str, str] = {}
        entries: dict[str, ListModel] = {}
        for upstream_id, entry in found:
            name = display_name(upstream_id)
            if name is None or not self.config.wanted(upstream_id):
                continue
            ids[name] = upstream_id
            entries[name] = self._entry(name, upstream_id, entry)
        for alias, target in self.config.aliases.items():
            name, target_name = display_name(alias), display_name(target)
            if name and target_name in ids:
                ids[name] = ids[target_name]
                entries[name] = entries[target_name].model_copy(
                    update={"name": name, "model": name}
                )
        self._ids, self._entries = ids, entries

    def _entry(self, name: str, upstream_id: str, entry: ListModel | None) -> ListModel:
        if entry is not None:
            return entry.model_copy(update={"name": name, "model": name})
        vendor = upstream_id.split("/")[0] if "/" in upstream_id else self.name
        return ListModel(
            name=name,
            model=name,
            modified_at=datetime.now(UTC),
            size=0,
            digest=hashlib.sha256(f"{self.name}/{upstream_id}".encode()).hexdigest(),
            details=ModelDetails(format="api", family=vendor, families=[vendor]),
            capabilities=list(self.capabilities),
        )

    def upstream_id(self, model: str) -> str:
        """The upstream's id for a model name; :class:`ModelNotFound` when not served."""
        name = display_name(model)
        if name is None or name not in self._ids:
            raise ModelNotFound(model)
        return self._ids[name]

    async def list_models(self) -> list[ListModel]:
        return list(self._entries.values())

    def describe(self) -> dict[str, Any]:
        """Each replica with its breaker and load, the limiter's counts; ``up`` while some
        replica's breaker is not open."""
        replicas = [
            {
                "url": r.url,
                "breaker": str(r.breaker.state()),
                "healthy": r.healthy,
                "consecutive_failures": r.breaker.failures,
                "outstanding": r.outstanding,
            }
            for r in self.replicas
        ]
        return described(
            self,
            replicas=replicas,
            up=any(r["breaker"] != "open" for r in replicas),
            active=self.limiter.active,
            waiting=self.limiter.waiting,
            rejected=self.limiter.rejected,
        )

    async def has_model(self, model: str) -> bool:
        name = display_name(model)
        return name is not None and name in self._ids

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        entry = self._entries.get(display_name(model) or "")
        if entry is None:
            raise ModelNotFound(model)
        return ShowResponse(
            details=entry.details,
            model_info={"general.architecture": entry.details.family, "general.basename": model},
            capabilities=list(entry.capabilities),
            modified_at=entry.modified_at,
        )

    async def running(self) -> list[PsModel]:
        return []

    # -- requests ----------------------------------------------------------------------------

    def url_for(self, replica: Replica, api: Api, endpoint: str) -> str:
        """The upstream URL of an endpoint in a family."""
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        """Headers for the upstream: its key (from the environment) and configured extras.

        The client's own ``Authorization`` is never passed on.
        """
        headers = {"content-type": "application/json", **self.config.headers}
        if key := self.config.api_key():
            headers["authorization"] = f"Bearer {key}"
        return headers

    def _inference_url(self, replica: Replica, api: Api, endpoint: str) -> URL:
        """:meth:`url_for`, parsed once per replica and endpoint."""
        key = (replica.url, api, endpoint)
        url = self._urls.get(key)
        if url is None:
            url = self._urls[key] = URL(self.url_for(replica, api, endpoint))
        return url

    def _order(self, tried: Collection[Replica] = ()) -> list[Replica]:
        """Replicas ``tried`` already last; then those whose breaker is not closed (open, or
        half-open: they take a call only when no closed one is there); least outstanding
        requests first."""
        closed = BreakerState.CLOSED
        return sorted(
            self.replicas,
            key=lambda r: (r in tried, r.breaker.state() != closed, r.outstanding),
        )

    def _circuit_open(self) -> BackendUnavailable:
        """The error for a call no replica's breaker lets through: retry when the first one
        lets a probe through."""
        wait = min((r.breaker.retry_in() for r in self.replicas), default=0.0)
        return BackendUnavailable(
            f"backend '{self.name}' is unavailable (circuit open)", retry_after=max(1.0, wait)
        )

    async def request(
        self,
        method: str,
        url_of: Callable[[Replica], str | URL],
        body: bytes | None,
        headers: dict[str, str] | None = None,
    ) -> tuple[aiohttp.ClientResponse, Replica]:
        """Send, retrying on another replica until a response starts (never after).

        A retry goes to a replica this call has not tried yet while there is one (in
        :meth:`_order`), so one failing replica whose breaker is still closed does not take
        every attempt while another could answer.
        """
        assert self._session is not None
        last: GardenError = BackendUnavailable(f"backend '{self.name}' is unavailable")
        tried: set[Replica] = set()
        for attempt in range(self.config.retries + 1):
            replica = next((r for r in self._order(tried) if r.breaker.allow()), None)
            if replica is None:
                raise self._circuit_open()
            tried.add(replica)
            replica.outstanding += 1
            try:
                response = await self._attempt(method, url_of(replica), body, headers)
            except GardenError as exc:
                replica.outstanding -= 1
                replica.breaker.failure()
                last = exc
            else:
                if response.status not in RETRYABLE:
                    replica.breaker.success()
                    return response, replica
                raw = await response.read()
                response.release()
                replica.outstanding -= 1
                replica.breaker.failure()
                last = status_error(response.status, raw)
            if attempt < self.config.retries:
                await asyncio.sleep(backoff(attempt))
        raise last

    async def _attempt(
        self, method: str, url: str | URL, body: bytes | None, headers: dict[str, str] | None
    ) -> aiohttp.ClientResponse:
        assert self._session is not None
        merged: Mapping[str, str]
        if headers is not None:
            merged = {**headers, **self.headers()}
        else:
            if self._headers is None:
                self._headers = CIMultiDictProxy(CIMultiDict(self.headers()))
            merged = self._headers
        try:
            async with asyncio.timeout(self.config.timeouts.first_byte):
                return await self._session.request(method, url, data=body, headers=merged)
        except TimeoutError:
            raise BackendUnavailable(f"backend '{self.name}' did not answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendUnavailable(f"backend '{self.name}' cannot be reached: {exc}") from None

    async def get_json(self, path_of: Callable[[Replica], str]) -> Any:
        """A small JSON GET (model lists) with the same retries and breakers."""
        await self.limiter.acquire()
        try:
            response, replica = await self.request("GET", path_of, None)
            try:
                raw = await response.read()
            finally:
                response.release()
                replica.outstanding -= 1
        finally:
            self.limiter.release()
        if response.status != 200:
            raise status_error(response.status, raw)
        return orjson.loads(raw)

    async def send(self, request: BackendRequest) -> BackendResponse:
        """Relay one inference request; the answer's bytes come back untouched.

        When the request is traced, a full limiter's wait is its ``garden.queue`` span and
        the call its ``garden.upstream`` span, whose ``traceparent`` goes upstream.
        """
        body = orjson.dumps(request.body)
        trace = request.trace
        upstream: Upstream | None = None
        if trace is None:
            await self.limiter.acquire()
        else:
            waits = self.limiter.full
            await (
                trace.queued(self.limiter.acquire(), self.name) if waits else self.limiter.acquire()
            )
            upstream = trace.upstream(self.name)
        try:
            response, replica = await self.request(
                "POST",
                lambda r: self._inference_url(r, request.api, request.endpoint),
                body,
                {**request.headers, **(upstream.headers if upstream is not None else {})} or None,
            )
        except BaseException as exc:
            self.limiter.release()
            if upstream is not None:
                upstream.failed(exc)
            raise
        if upstream is not None:
            upstream.answered(response.status, str(response.url))
        if response.status != 200:
            raw = await response.read()
            response.release()
            replica.outstanding -= 1
            self.limiter.release()
            error = status_error(response.status, raw)
            if upstream is not None:
                upstream.failed(error)
            raise error
        return BackendResponse(
            200,
            response.headers.get("content-type", "application/json").split(";")[0],
            iter_body(
                response, BackendUnavailable, f"backend '{self.name}'", self.config.timeouts.idle
            ),
            request.api,
            close=self.closer(response, replica, upstream),
        )

    def closer(
        self, response: aiohttp.ClientResponse, replica: Replica, upstream: Upstream | None = None
    ) -> Callable[[], Awaitable[None]]:
        """Frees a started response's connection, replica count and limiter slot, once
        (and ends its ``garden.upstream`` span)."""
        done = False

        async def close() -> None:
            nonlocal done
            if not done:
                done = True
                response.close()
                replica.outstanding -= 1
                self.limiter.release()
                if upstream is not None:
                    upstream.end()

        return close


class OllamaBackend(RemoteBackend):
    """Ollama daemons: they speak both families, so both are relayed as bytes."""

    kind = "ollama"
    apis = frozenset({Api.OLLAMA, Api.OPENAI})
    health_path = "/api/version"

    async def discover(self) -> list[tuple[str, ListModel | None]]:
        data = await self.get_json(lambda r: f"{r.url}/api/tags")
        found: list[tuple[str, ListModel | None]] = []
        for raw in data.get("models") or []:
            with contextlib.suppress(ValueError):
                entry = ListModel.model_validate(
                    {**raw, "name": raw.get("name") or raw.get("model")}
                )
                found.append((entry.name, entry))
        return found

    def url_for(self, replica: Replica, api: Api, endpoint: str) -> str:
        prefix = "/api/" if api is Api.OLLAMA else "/v1/"
        return f"{replica.url}{prefix}{endpoint}"

    async def send(self, request: BackendRequest) -> BackendResponse:
        """Relay one request (``think`` relaxed: :class:`RelaxedThink`)."""
        return await self.relaxed.send(super().send, request)

    async def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> BackendResponse:
        """The passthrough: one request relayed to a replica, its answer streamed back."""
        await self.limiter.acquire()
        try:
            upstream, replica = await self.request(
                method, lambda r: f"{r.url}{path}", body, headers
            )
        except BaseException:
            self.limiter.release()
            raise
        return BackendResponse(
            upstream.status,
            upstream.headers.get("content-type", "application/json"),
            iter_body(
                upstream, BackendUnavailable, f"backend '{self.name}'", self.config.timeouts.idle
            ),
            Api.OLLAMA,
            close=self.closer(upstream, replica),
            headers=dict(upstream.headers),
        )

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        upstream = self.upstream_id(model)
        body = orjson.dumps({"model": upstream, "verbose": verbose})
        response, replica = await self.request("POST", lambda r: f"{r.url}/api/show", body)
        try:
            raw = await response.read()
        finally:
            response.release()
            replica.outstanding -= 1
        if response.status != 200:
            raise status_error(response.status, raw)
        data = orjson.loads(raw)
        data.setdefault("model_info", {})
        data.setdefault("capabilities", ["completion"])
        data.setdefault("modified_at", datetime.now(UTC).isoformat())
        return ShowResponse.model_validate(data)

    async def running(self) -> list[PsModel]:
        try:
            data = await self.get_json(lambda r: f"{r.url}/api/ps")
        except GardenError:
            return []
        names: dict[str, str] = {}
        for name, upstream_id in self._ids.items():  # discovered names come before aliases
            names.setdefault(upstream_id, name)
        out = []
        for raw in data.get("models") or []:
            with contextlib.suppress(ValueError):
                entry = PsModel.model_validate(raw)
                shown = names.get(entry.name, entry.name)
                out.append(entry.model_copy(update={"name": shown, "model": shown}))
        return out


class OpenAIBackend(RemoteBackend):
    """OpenAI-compatible services: OpenAI clients are relayed, Ollama clients translated."""

    kind = "openai"
    apis = frozenset({Api.OPENAI})
    health_path = "/models"

    async def discover(self) -> list[tuple[str, ListModel | None]]:
        data = await self.get_json(lambda r: f"{r.url}/models")
        return [(str(m["id"]), None) for m in data.get("data") or [] if "id" in m]

    def url_for(self, replica: Replica, api: Api, endpoint: str) -> str:
        return f"{replica.url}/{endpoint}"


class AnthropicBackend(RemoteBackend):
    """Anthropic's Messages API as an upstream: Anthropic clients are relayed (with their
    ``anthropic-beta`` header), every other family translated; the key goes as
    ``x-api-key`` with ``anthropic-version``, never the client's."""

    kind = "anthropic"
    apis = frozenset({Api.ANTHROPIC})
    health_path = "/v1/models"
    capabilities = ("completion", "tools", "vision", "thinking")
    #: The API version sent upstream (a client's own is not passed on).
    version = "2023-06-01"

    async def discover(self) -> list[tuple[str, ListModel | None]]:
        data = await self.get_json(lambda r: f"{r.url}/v1/models?limit=1000")
        return [(str(m["id"]), None) for m in data.get("data") or [] if "id" in m]

    def url_for(self, replica: Replica, api: Api, endpoint: str) -> str:
        return f"{replica.url}/v1/{endpoint}"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": self.version}
        headers.update(self.config.headers)
        if key := self.config.api_key():
            headers["x-api-key"] = key
        return headers
