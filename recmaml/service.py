"""`recmaml serve`: ranked lists for new users' first clicks, over HTTP (FastAPI on uvicorn; the `serve` extra).

    POST /recommend   {"users": [{"items": [...], "ratings"?, "timestamps"?, "candidates"?}], "k"?, "exclude_seen"?,
                       "history_kind"?, "at"?}
    POST /predict     {"users": [{"items": [...], ..., "score_items": [...]}], "history_kind"?, "at"?}: scores of
                      (user, item) pairs
    GET  /health      GET /model (what is loaded)      POST /reload {"path"?}: take up a new model directory
    GET  /docs, /openapi.json: the schema the framework generates

POST /reload is off unless the operator gives a secret at start (ReloadPolicy): a client then sends it as
`Authorization: Bearer <token>` (compared in constant time), and may name only folders under the reload
root (the served directory unless named). No answer gives a client a filesystem path or says whether one
exists: a refused reload is one generic message, and the server's log keeps the reason. SIGHUP reloads the
served directory whatever the policy (only whoever may signal the process can).

Concurrent requests are gathered (at most `max_wait_ms`, at most `max_users` users; no wait when no other
request is in flight) and adapted in one batched computation on the event loop's thread, through the batch
path's steps (recmaml.serve.rank_histories): the lists equal those of `recommend`. A reload (POST /reload
or SIGHUP) loads and checks the new model beside the old one, which answers until the swap; a damaged
model is refused and the old one stays. Past capacity /recommend sheds load: a request that would wait
behind more than `max_queue_ms` of queued users gets a 503 with Retry-After at once. Bad requests get a
4xx with a JSON body naming the field and the fix; no traceback reaches a client. uvicorn finishes the requests in flight on SIGTERM.
With workers (run's `workers`, `recmaml serve --workers N`), N processes answer on the port, each as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import hmac
import json
import logging
import math
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from recmaml.checkpoint import METADATA
from recmaml.cold import UserHistory, arrivals
from recmaml.errors import RecMamlError, cut
from recmaml.recommender import MetaRecommender
from recmaml.serve import UserRanking, rank_histories, score_histories

log = logging.getLogger(__name__)
access_log = logging.getLogger("recmaml.access")  # one line per request (AccessLog), off with --quiet

MAX_BODY_BYTES = 1 << 20  # 1 MiB: about 10,000 users of 5 items
MAX_USERS = 1000  # users per request
MAX_HISTORY = 1000  # items per user's history, and candidates or items to score per user
MAX_K = 1000
ABSORB_ROUNDS = 8  # event-loop rounds after each batch for the requests that arrived during it
ABSORB_SECONDS = 0.01  # and at most this long while some are still being parsed
MAX_QUEUE_MS = 500.0  # queued work past which /recommend sheds load (a 503 beats a wait that outlasts the client)

Id = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | str  # an item id: a 64-bit integer or a string


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserIn(_Strict):
    """One new user: the item ids it interacted with (in the order shown) and, optionally, one rating and
    one time (Unix seconds) per item, and candidate item ids (only those are ranked)."""

    user_id: Id | None = Field(None, description="echoed in the answer")
    items: list[Id] = Field(default_factory=list, max_length=MAX_HISTORY)
    ratings: list[FiniteFloat] | None = Field(None, max_length=MAX_HISTORY, description="required by a rating model")
    timestamps: list[FiniteFloat] | None = Field(None, max_length=MAX_HISTORY, description="Unix seconds")
    candidates: list[Id] | None = Field(None, max_length=MAX_HISTORY)


class _ServedAs(_Strict):
    """What MetaRecommender.recommend and .score take beside the users: the kind of history they show and
    when they arrive."""

    history_kind: Literal["first", "sample"] | None = Field(
        None, description="what the users' items are: 'first' (their earliest interactions, a new user's) or "
        "'sample' (a random sample of them); default: the service's (recmaml serve --history-kind), else the model's")
    at: FiniteFloat | str | None = Field(
        None, description="when users without timestamps arrive, for the time-aware popularity prior: Unix seconds "
        "or an ISO date such as 2024-03-01; default: the end of the warm log")

    @field_validator("at")
    @classmethod
    def _seconds(cls, at):
        return arrivals(at)  # a time that does not read is a 422 naming `at`, before the request is queued


class RecommendIn(_ServedAs):
    users: list[UserIn] = Field(min_length=1, max_length=MAX_USERS)
    k: int = Field(20, ge=1, le=MAX_K, description="list length")
    exclude_seen: bool = Field(True, description="leave the user's own items out of its list")


class RankedOut(BaseModel):
    user_id: Id | None
    items: list[Id] = Field(description="item ids, best first")
    scores: list[float]
    ranks: list[int]
    unknown_items: int = Field(description="history items the model does not know (ignored)")


class RecommendOut(BaseModel):
    results: list[RankedOut]
    model: str = Field(description="sha256 of the weights that answered")


class PredictUserIn(UserIn):
    score_items: list[Id] = Field(min_length=1, max_length=MAX_HISTORY, description="item ids to score")


class PredictIn(_ServedAs):
    users: list[PredictUserIn] = Field(min_length=1, max_length=MAX_USERS)


class ScoresOut(BaseModel):
    user_id: Id | None
    items: list[Id]
    scores: list[float | None] = Field(description="null for an item the model does not know")


class PredictOut(BaseModel):
    results: list[ScoresOut]
    model: str


class ReloadIn(_Strict):
    path: str | None = Field(None, description="a model directory under the server's reload root, relative to "
                             "it; default: the one being served")


class ModelOut(BaseModel):
    name: str = Field(description="the model directory's own name (never a path: the server's folders are its own)")
    weights_sha256: str
    recmaml_version: str | None = Field(description="the recmaml that saved the model")
    items: int
    objective: str
    loaded_at: float = Field(description="Unix seconds")
    config: dict


class ErrorOut(BaseModel):
    error: str
    field: str
    fix: str


# ---- the model being served, and its replacement ------------------------------------------------------------

@dataclass
class Loaded:
    rec: MetaRecommender
    path: str  # the server's own: logged, never answered to a client
    sha256: str
    saved_by: str | None = None  # the recmaml version that saved it
    loaded_at: float = field(default_factory=time.time)


def load_checked(path, threads: int | str | None = None, device: str = "cpu",
                 history_kind: str | None = None) -> Loaded:
    """A model directory loaded on `device` and checked by serving a user with no history (finite scores),
    before it may replace the one being served; threads: serve.threads to serve it with (None: the model's);
    history_kind: the kind of history served when a request names none (None: the model's)."""
    rec = MetaRecommender.load(path, device=device).with_history_kind(history_kind)
    if threads is not None:
        rec = rec.with_serving(threads=threads)
    probe = rec.recommend_user([], k=1)
    if len(probe.scores) != 1 or not np.isfinite(probe.scores).all():
        raise RecMamlError(f"{path}: the model loads but serves no finite score; it is damaged")
    return Loaded(rec, str(path), rec.weights_sha256 or "", _saved_by(path))


def _saved_by(path) -> str | None:
    """The recmaml version recorded in the model's metadata (MetaRecommender.load checked the file just now;
    a rewrite since then only costs the answer this field)."""
    try:
        version = json.loads((Path(path) / METADATA).read_text(encoding="utf-8")).get("recmaml_version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


# ---- who may reload over HTTP, and what -----------------------------------------------------------------------

RELOAD_TOKEN_ENV = "RECMAML_RELOAD_TOKEN"
MIN_TOKEN_CHARS = 16


def reload_token_problem(token: str) -> str | None:
    """Why `token` cannot be the reload secret, or None: it travels in an HTTP header (printable ASCII, no
    spaces), and a short one could be guessed over the network."""
    if len(token) < MIN_TOKEN_CHARS:
        return (f"the secret has {len(token)} characters, at least {MIN_TOKEN_CHARS} are needed; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if not all(33 <= ord(c) <= 126 for c in token):
        return "the secret travels in an HTTP header: use printable ASCII without spaces (e.g. secrets.token_urlsafe)"
    return None


@dataclass(frozen=True)
class ReloadPolicy:
    """Whether POST /reload is on (a token given at start) and the folder whose model directories it may
    take up (root, resolved)."""

    token: str | None
    root: Path

    def authorized(self, credentials: str | None) -> bool:
        """`credentials` (the bearer token a client sent) is the token; compare_digest's time depends on the
        lengths only, never on where a guess first differs."""
        given = (credentials or "").encode("latin-1", "replace")  # as the header's bytes came (latin-1)
        return hmac.compare_digest(given, self.token.encode("ascii"))

    def target(self, path: str | None, served: str) -> Path | None:
        """The folder a reload of `path` takes up (relative to the root; no path: the served one), symlinks
        and '..' resolved; None when it lies outside the root, or is no path at all (a NUL byte)."""
        if path is None:
            return Path(served)
        try:
            folder = (self.root / path).resolve()
        except (OSError, ValueError, RuntimeError):  # an embedded NUL, a name too long, a symlink loop
            return None
        return folder if folder.is_relative_to(self.root) else None


# ---- gathering concurrent requests ----------------------------------------------------------------------------

@dataclass
class _Job:
    histories: list[UserHistory]
    k: int
    exclude_seen: bool
    done: asyncio.Future
    served_as: tuple = (None, None)  # the request's (history_kind, at): None keeps the served model's


class Overloaded(Exception):
    """A request refused because the users queued ahead of it would take longer than the service's
    max_queue to rank: a 503 with Retry-After, at once, rather than a wait that outlasts the client."""

    def __init__(self, wait: float):
        super().__init__(f"about {wait:.2f} s of users are queued")
        self.wait = wait


class Batcher:
    """Gathers the users of concurrent /recommend requests and ranks them in one batched computation: the
    requests that arrive while one batch is computed form the next; a batch waits up to max_wait seconds
    for more users only while other requests are in flight.

    Past capacity it sheds load: a request that would wait behind more than max_queue seconds of queued
    users (at the rate the recent batches ran) is refused with Overloaded. Batches run on the event loop's
    thread, so the requests that arrive during one wait in their sockets; after each batch the loop takes
    them in (_absorb_arrivals), so that they queue or are refused before the next one starts. A request
    finding the queue empty is always taken; max_queue None takes every request. (A request's own age is
    not used: a client slow to send its body is not the service falling behind.)"""

    RATE_MEMORY = 0.8  # the users/s estimate keeps this much of its past at each batch
    WARMUP_BATCHES = 3  # the first batches of a model build its caches: too slow to say what it can do

    def __init__(self, service: Service, max_users: int, max_wait: float, max_queue: float | None = None):
        self.service, self.max_users, self.max_wait, self.max_queue = service, max_users, max_wait, max_queue
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.queued_users = 0  # users of the requests in the queue (not yet in a batch)
        self.rate: float | None = None  # users ranked per second by recent batches (None: none counted yet)
        self._rated: tuple = (None, 0)  # (the model the rate is of, its batches so far)

    def expected_wait(self) -> float | None:
        """Seconds the users queued now would take to rank; None while the queue is empty or no batch ran."""
        if self.queued_users == 0 or not self.rate:
            return None
        return self.queued_users / self.rate

    async def rank(self, histories: list[UserHistory], k: int, exclude_seen: bool,
                   served_as: tuple = (None, None)) -> tuple[list[UserRanking], str]:
        wait = self.expected_wait()
        if self.max_queue is not None and wait is not None and wait > self.max_queue:
            raise Overloaded(wait)
        _count_users(len(histories))
        done = asyncio.get_running_loop().create_future()
        self.queued_users += len(histories)
        await self.queue.put(_Job(histories, k, exclude_seen, done, served_as))
        return await done

    def _took(self, loaded, users: int, seconds: float) -> None:
        """Count a batch in the rate: a reloaded model starts a new rate, after its warm-up batches."""
        model, batches = self._rated
        if model is not loaded:
            model, batches, self.rate = loaded, 0, None
        self._rated = (model, batches + 1)
        if batches < self.WARMUP_BATCHES:
            return
        rate = users / max(seconds, 1e-6)
        self.rate = rate if self.rate is None else self.RATE_MEMORY * self.rate + (1 - self.RATE_MEMORY) * rate

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            users = len(jobs[0].histories)
            self.queued_users -= users
            deadline = loop.time() + self.max_wait
            while users < self.max_users:
                if self.queue.empty():
                    # wait only for requests already in the server, being received or parsed
                    if self.service.arriving == 0 or loop.time() >= deadline:
                        break
                    await asyncio.sleep(0.0002)
                    continue
                job = self.queue.get_nowait()
                jobs.append(job)
                users += len(job.histories)
                self.queued_users -= len(job.histories)
            loaded = self.service.loaded  # a reload swaps it between batches, never within one
            started = time.perf_counter()
            try:
                # on the event loop's own thread: serving's Python steps hold the GIL, and in a worker thread
                # they fought the loop for it (one user took 7-13 ms there beside 15 requests being parsed,
                # 2 ms here); the requests that arrive meanwhile wait in the socket and form the next batch
                answers = _rank_jobs(loaded.rec, jobs)
                self._took(loaded, users, time.perf_counter() - started)
                log.debug("batch of %d users (%d requests): %.2f ms", users, len(jobs),
                          1000 * (time.perf_counter() - started))
            except Exception as err:  # noqa: BLE001 - every waiting request must get an answer
                for job in jobs:
                    if not job.done.done():
                        job.done.set_exception(err)
            else:
                for job, answer in zip(jobs, answers):
                    if not job.done.done():  # a client that went away
                        job.done.set_result((answer, loaded.sha256))
            await self._absorb_arrivals()

    async def _absorb_arrivals(self) -> None:
        """Let the event loop take in the requests that reached the server's sockets during the batch
        (accept, read, parse, queue: a few loop rounds each), so that they queue, or are refused, before
        the next batch starts, instead of waiting unseen in their sockets through it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ABSORB_SECONDS
        for _ in range(ABSORB_ROUNDS):  # rounds enough to bring a request from the socket to the queue
            await asyncio.sleep(0)
        while self.service.arriving > 0 and loop.time() < deadline:
            await asyncio.sleep(0)


def _rank_jobs(served: MetaRecommender, jobs: list[_Job]) -> list:
    """Every job's rankings, users of jobs alike in exclude_seen, history kind and arrival time ranked
    together at the largest k; a failing job (a bad history) gets its own error, the others their lists."""
    answers: list = [None] * len(jobs)
    for exclude_seen, served_as in dict.fromkeys((job.exclude_seen, job.served_as) for job in jobs):
        group = [i for i, job in enumerate(jobs) if (job.exclude_seen, job.served_as) == (exclude_seen, served_as)]
        rec = _served_as(served, *served_as)
        histories = [h for i in group for h in jobs[i].histories]
        try:
            ranked = rank_histories(rec, histories, max(jobs[i].k for i in group), exclude_seen)
        except RecMamlError:  # one bad history: rank each job alone, so that only its own fails
            for i in group:
                try:
                    answers[i] = rank_histories(rec, jobs[i].histories, jobs[i].k, exclude_seen)
                except RecMamlError as err:
                    answers[i] = err
            continue
        start = 0
        for i in group:
            n, k = len(jobs[i].histories), jobs[i].k
            answers[i] = [UserRanking(r.items[:k], r.scores[:k], r.unknown_items) for r in ranked[start:start + n]]
            start += n
    return answers


# ---- the application ---------------------------------------------------------------------------------------------

class Service:
    """What the app holds: the loaded model, the reload thread, the batcher and the count of requests
    still arriving."""

    def __init__(self, loaded: Loaded, max_users: int, max_wait: float, threads: int | str | None = None,
                 device: str = "cpu", history_kind: str | None = None, max_queue: float | None = None):
        self.loaded, self.threads, self.device, self.history_kind = loaded, threads, device, history_kind
        self.loader = ThreadPoolExecutor(1, thread_name_prefix="recmaml-reload")
        self.batcher = Batcher(self, max_users, max_wait, max_queue)
        self.arriving = 0  # requests received but not yet queued or answered (the batcher waits for them)
        self.in_flight = 0  # requests received and not yet answered (GET /health says how many)
        self.reload_lock = asyncio.Lock()

    async def reload(self, path: str | None) -> Loaded:
        async with self.reload_lock:
            target = path or self.loaded.path
            loaded = await asyncio.get_running_loop().run_in_executor(self.loader, load_checked, target,
                                                                         self.threads, self.device,
                                                                         self.history_kind)
            self.loaded = loaded
            _refreeze()  # the old model's objects are collected once no batch holds them; the new one's frozen
            log.info("serving %s (weights %s)", loaded.path, loaded.sha256[:12])
            return loaded


def _refreeze() -> None:
    """Everything loaded kept out of the cyclic collector's full passes (gc.freeze), which walked torch's
    and the model's objects and stalled the loop for tens of ms (the p99 at 16 connections); after a
    reload, unfrozen and collected first, so that the replaced model does not stay frozen in memory."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def create_app(model_dir, max_users: int = 256, max_wait_ms: float = 2.0, threads: int | str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, device: str = "cpu", reload_token: str | None = None,
               reload_root=None, access: bool = True, history_kind: str | None = None,
               max_queue_ms: float = MAX_QUEUE_MS, on_reload=None) -> FastAPI:
    """The HTTP service over the model directory `model_dir` (loaded on `device` and checked now: a bad one
    raises). threads: serve.threads for scoring (None: the model's). reload_token: the secret that turns POST
    /reload on (None: off); reload_root: the folder whose model directories it may take up (None: model_dir
    itself). access: one access_log line per request. history_kind: the kind of history served to requests
    that name none (None: the model's serve.history_kind), kept across reloads. max_queue_ms: past this much
    queued work a /recommend request gets a 503 with Retry-After at once (0: never; see Batcher). on_reload:
    called with the model directory a POST /reload took up, once this app serves it (a worker process tells
    the others: see run's workers)."""
    if reload_token is not None and reload_token_problem(reload_token):
        raise RecMamlError(f"reload_token: {reload_token_problem(reload_token)}")
    policy = ReloadPolicy(reload_token, Path(model_dir if reload_root is None else reload_root).resolve())
    service = Service(load_checked(model_dir, threads, device, history_kind), max_users, max_wait_ms / 1000,
                      threads, device, history_kind, max_queue_ms / 1000 if max_queue_ms > 0 else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        _refreeze()
        batcher = asyncio.create_task(service.batcher.run())
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # SIGHUP: POSIX, main thread
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload_logged(service)))
        yield
        batcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await batcher
        service.loader.shutdown(wait=False)
        gc.unfreeze()

    app = FastAPI(title="recmaml", version=_version(), lifespan=lifespan,
                  description="Ranked lists for new users from their first interactions (meta-learned cold start).")
    app.state.service, app.state.policy = service, policy
    app.add_middleware(_Gate, service=service, max_bytes=max_body_bytes)
    if access:  # outside _Gate: its 413s and 500s are logged too
        app.add_middleware(AccessLog)
    _error_handlers(app)
    bad = {422: {"model": ErrorOut, "description": "a field is wrong; the body names it and the fix"},
           413: {"model": ErrorOut, "description": "the body is too large"}}

    @app.post("/recommend", response_model=RecommendOut,
              responses={**bad, 503: {"model": ErrorOut, "description": "past capacity: retry after Retry-After"}})
    async def recommend(body: RecommendIn, request: Request) -> RecommendOut:
        """Each user's top k items, adapted on its history (with the requests that arrive with it)."""
        histories = [_history(user) for user in body.users]
        _arrived(request, service)
        try:
            answer, sha = await service.batcher.rank(histories, body.k, body.exclude_seen,
                                                     (body.history_kind, body.at))
        except Overloaded as busy:
            return _overloaded(busy)
        if isinstance(answer, RecMamlError):
            raise answer
        return RecommendOut(results=[_ranked(user, r) for user, r in zip(body.users, answer)], model=sha)

    @app.post("/predict", response_model=PredictOut, responses=bad)
    async def predict(body: PredictIn) -> PredictOut:
        """The scores (ratings, for a rating model) of each user's `score_items`, adapted on its history."""
        loaded = service.loaded
        histories = [_history(user, candidates=user.score_items) for user in body.users]
        _count_users(len(histories))
        rec = _served_as(loaded.rec, body.history_kind, body.at)
        scores = score_histories(rec, histories)  # on the loop's thread, as the batches (Batcher.run)
        results = [ScoresOut(user_id=u.user_id, items=u.score_items,
                             scores=[None if math.isnan(s) else float(s) for s in row.tolist()])
                   for u, row in zip(body.users, scores)]
        return PredictOut(results=results, model=loaded.sha256)

    @app.get("/health")
    async def health() -> dict:
        """ok, the served weights' sha256, and the requests received and not yet answered (this one too):
        what a load balancer watches while it drains the service."""
        return {"status": "ok", "model": service.loaded.sha256, "in_flight": service.in_flight}

    @app.get("/model", response_model=ModelOut)
    async def model() -> ModelOut:
        """The model being served: its directory's name, the sha256 of its weights, the recmaml that saved
        it, its catalog and its config."""
        loaded = service.loaded
        rec = loaded.rec
        return ModelOut(name=Path(loaded.path).name, weights_sha256=loaded.sha256, recmaml_version=loaded.saved_by,
                        items=len(rec.items), objective=rec.config.model.objective, loaded_at=loaded.loaded_at,
                        config=rec.config.to_dict())

    @app.post("/reload", response_model=ModelOut, openapi_extra=_RELOAD_BODY, responses={
        401: {"model": ErrorOut, "description": "the reload token is missing or wrong"},
        403: {"model": ErrorOut, "description": "reload over HTTP is off on this server"},
        409: {"model": ErrorOut, "description": "refused; the served model is unchanged"},
        422: {"model": ErrorOut, "description": "a field is wrong"}})
    async def reload(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)):
        """Take up a model directory under the reload root (default: the served one, rewritten): loaded
        and checked beside the served model, which answers until the swap; one refused (409) leaves the old
        one. Off (403) unless the server was started with a reload token, sent as `Authorization: Bearer`."""
        if policy.token is None:
            return _error(403, "reload over HTTP is off on this server", "the operator turns it on by starting "
                          f"recmaml serve with {RELOAD_TOKEN_ENV} set to a secret; SIGHUP to the server reloads its "
                          "model directory meanwhile")
        if not policy.authorized(credentials.credentials if credentials else None):
            log.warning("POST /reload refused: a missing or wrong token, from %s",
                        request.client.host if request.client else "an unknown client")
            return _error(401, "not authorized", "send the reload token as Authorization: Bearer <token>",
                          headers={"WWW-Authenticate": "Bearer"})
        # the body only once the token is right: nobody else learns what it would have done
        body = _reload_body(await request.body())
        target = policy.target(body.path if body else None, service.loaded.path)
        if target is None:
            log.warning("POST /reload of %r refused: outside the reload root %s", body.path, policy.root)
            return _not_taken_up()
        try:
            await service.reload(str(target))
        except (RecMamlError, OSError) as err:
            log.error("POST /reload of %s refused, the served model is unchanged: %s", target, cut(str(err), 500))
            return _not_taken_up()
        if on_reload is not None:
            on_reload(str(target))
        return await model()

    return app


_BEARER = HTTPBearer(auto_error=False, description=f"the secret the server was started with ({RELOAD_TOKEN_ENV})")
# the body of POST /reload, read by the handler after the token is checked (a declared body is parsed before)
_RELOAD_BODY = {"requestBody": {"required": False,
                                "content": {"application/json": {"schema": ReloadIn.model_json_schema()}}}}


def _reload_body(raw: bytes) -> ReloadIn | None:
    """POST /reload's body: none, null or a ReloadIn; a wrong one is a 422 naming the field, as elsewhere."""
    if raw.strip() in (b"", b"null"):
        return None
    try:
        return ReloadIn.model_validate_json(raw)
    except ValidationError as err:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in err.errors()]) from None


def _not_taken_up() -> JSONResponse:
    """One answer for every refused reload (outside the root, no such folder, not a model, damaged): a client
    learns nothing about the server's folders; its log has the reason."""
    return _error(409, "the model was not taken up; the served model is unchanged",
                  "give a model directory under the server's reload root, relative to it; the server's log "
                  "says why this one was refused", field="path")


def _overloaded(busy: Overloaded) -> JSONResponse:
    retry = max(1, math.ceil(busy.wait))
    return _error(503, f"the service is past its capacity: {busy}", f"retry after {retry} s (Retry-After), send "
                  "users at a lower rate, add replicas, or start recmaml serve with a larger --max-queue-ms",
                  headers={"Retry-After": str(retry)})


def _error(status: int, error: str, fix: str, field: str = "", headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, headers=headers, content={"error": error, "field": field, "fix": fix})


async def _reload_logged(service: Service) -> None:
    try:
        await service.reload(None)
    except RecMamlError as err:
        log.error("reload refused, the served model is unchanged: %s", cut(str(err), 500))


def _served_as(rec: MetaRecommender, history_kind: str | None, at: float | None) -> MetaRecommender:
    """The served model as a request asks (history_kind, at: None keeps the service's), a shallow copy."""
    return rec.with_history_kind(history_kind).arriving_at(at)


def _history(user: UserIn, candidates=None) -> UserHistory:
    return UserHistory(user.items, user.ratings, user.timestamps, user.candidates if candidates is None else candidates)


def _ranked(user: UserIn, ranking: UserRanking) -> RankedOut:
    return RankedOut(user_id=user.user_id, items=ranking.items.tolist(), scores=ranking.scores.tolist(),
                     ranks=list(range(1, len(ranking.items) + 1)), unknown_items=ranking.unknown_items)


def _version() -> str:
    from recmaml import __version__

    return __version__


# ---- errors: a JSON body that names the field and the fix, never a traceback --------------------------------------

_FIXES = {
    "missing": "add the field",
    "extra_forbidden": "remove the field; the schema is at /openapi.json",
    "too_long": "send fewer entries (split the request)",
    "too_short": "send at least one entry",
    "json_invalid": "send a JSON object (Content-Type: application/json)",
    "model_attributes_type": "send a JSON object",
    "dict_type": "send a JSON object",
    "list_type": "send a JSON array",
    "int_parsing": "send a whole number",
    "int_from_float": "send a whole number",
    "float_parsing": "send a number",
    "finite_number": "send a finite number (no NaN or Infinity)",
    "bool_parsing": "send true or false",
    "less_than_equal": "send a smaller number",
    "greater_than_equal": "send a larger number",
}


_UNION_TAGS = {"int", "str", "float", "bool", "list", "dict"}  # pydantic names the member of a union it tried


def _field(loc) -> str:
    """pydantic's location ('body', 'users', 0, 'items', 0, 'constrained-int') as users[0].items[0]."""
    parts = [p for p in loc if p != "body" and not (isinstance(p, str) and (p in _UNION_TAGS or "-" in p or "[" in p))]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
        where = "body" if first.get("type") == "json_invalid" else _field(first.get("loc", ("body",)))
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        return JSONResponse(status_code=422, content={
            "error": cut(f"{where}: {first.get('msg', 'invalid')}{more}", 500), "field": where,
            "fix": _FIXES.get(first.get("type", ""), "see the request schema at /docs or /openapi.json")})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        where = "body" if exc.status_code == 400 else "path" if exc.status_code in (404, 405) else ""
        fix = {400: "send a JSON object (Content-Type: application/json)",
               404: "see the endpoints at /docs", 405: "see the methods at /docs"}.get(exc.status_code, "")
        return JSONResponse(status_code=exc.status_code, headers=getattr(exc, "headers", None),
                            content={"error": cut(str(exc.detail), 500), "field": where, "fix": fix})

    @app.exception_handler(RecMamlError)
    async def bad_data(request: Request, exc: RecMamlError):
        message = cut(str(exc), 500)
        where = message.split(":", 1)[0] if message.startswith("users[") else "body"
        return JSONResponse(status_code=422, content={"error": message, "field": where,
                                                      "fix": "correct the field as the error says"})




ARRIVING = "recmaml.arriving"  # set in a request's scope while it counts in Service.arriving


def _arrived(request: Request, service: Service) -> None:
    """A request parsed and about to be queued no longer counts as arriving."""
    if request.scope.pop(ARRIVING, False):
        service.arriving -= 1


class _Gate:
    """Counts the requests arriving (the batcher waits for them) and refuses a request body over
    max_bytes with 413 (by Content-Length, and while reading a body sent without one), before it is parsed."""

    def __init__(self, app, service: Service, max_bytes: int):
        self.app, self.service, self.max_bytes = app, service, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.service.arriving += 1
        self.service.in_flight += 1
        scope[ARRIVING] = True
        try:
            await self._limited(scope, receive, send)
        finally:
            self.service.in_flight -= 1
            if scope.pop(ARRIVING, False):  # not queued (another endpoint, or an error)
                self.service.arriving -= 1

    async def _limited(self, scope, receive, send):
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen, refused, started = 0, False, False

        async def counted():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # answered here; the app is told the client left, and its answer dropped
                refused = True
                await self._refuse(send)
                return {"type": "http.disconnect"}
            return message

        async def unless_refused(message):
            nonlocal started
            if not refused:
                started = True
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:  # noqa: BLE001 - no traceback, nor any of its text, reaches a client
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if not started and not refused:
                await _send_json(send, 500, b'{"error":"internal error; the server\'s log has the details",'
                                            b'"field":"","fix":"retry; report it if it repeats"}')

    async def _refuse(self, send):
        await _send_json(send, 413, b'{"error":"the request body is over %d bytes","field":"body",'
                                    b'"fix":"split the users over several requests"}' % self.max_bytes)


# the users of the request being answered, for its access-log line: set by AccessLog in the request's own
# context, counted where the users are parsed into histories (Batcher.rank, /predict)
_REQUEST_USERS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("recmaml_request_users", default=None)


def _count_users(n: int) -> None:
    users = _REQUEST_USERS.get()
    if users is not None:
        users[0] += n


class AccessLog:
    """One line per request on the `recmaml.access` logger: `POST /recommend 200 users=3 4.1ms` (users: those
    of a /recommend or /predict body, '-' elsewhere; ms: until the answer's last byte was handed over).
    uvicorn's own access log is off in `run`, so each request is logged once."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, users = time.perf_counter(), None, [0]
        context = _REQUEST_USERS.set(users)

        async def noted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            _REQUEST_USERS.reset(context)
            access_log.info("%s %s %s users=%s %.1fms", scope["method"], _logged_path(scope), status or "-",
                            users[0] or "-", 1000 * (time.perf_counter() - started))


def _logged_path(scope) -> str:
    """The path as the client sent it (percent-encoded: a decoded %0a would break the line), cut."""
    raw = scope.get("raw_path")
    return cut(raw.decode("latin-1") if raw else repr(scope["path"]), 200)


async def _send_json(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def run(model_dir, host: str = "127.0.0.1", port: int = 8000, max_users: int = 256, max_wait_ms: float = 2.0,
        threads: int | str | None = None, log_level: str = "info", device: str = "cpu",
        reload_token: str | None = None, reload_root=None, access: bool = True,
        history_kind: str | None = None, max_queue_ms: float = MAX_QUEUE_MS, workers: int = 1) -> None:
    """Serve until SIGTERM or Ctrl-C; the requests in flight are answered first, then it returns. workers:
    that many processes answer on the port (see _run_workers); the other arguments are create_app's."""
    import uvicorn

    settings = dict(max_users=max_users, max_wait_ms=max_wait_ms, threads=threads, device=device,
                    reload_root=reload_root, access=access, history_kind=history_kind, max_queue_ms=max_queue_ms)
    if workers > 1:
        _run_workers(model_dir, workers, host=host, port=port, log_level=log_level, reload_token=reload_token,
                     settings={**settings, "threads": 1 if threads is None else threads,
                               "reload_root": str(model_dir if reload_root is None else reload_root)})
        return
    app = create_app(model_dir, reload_token=reload_token, **settings)
    _log_reload_policy(app.state.policy)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                           timeout_graceful_shutdown=30))
    # uvicorn replays the signal it stopped on once its graceful shutdown is done; for a service SIGTERM is
    # the normal stop, so the replay ends nothing (a caller's own SIGTERM handling is restored afterwards)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    log.info("stopped; every request in flight was answered")


WORKERS_ENV = "RECMAML_SERVE_WORKERS"  # what a worker process of `recmaml serve --workers N` starts from
WORKER_READY_SECONDS = 120  # how long a new worker may take to load its model and answer


def _run_workers(model_dir, workers: int, *, host: str, port: int, log_level: str, reload_token: str | None,
                 settings: dict) -> None:
    """`workers` processes answer on one port, each with its own model, batcher and (unless `threads` says
    otherwise) one torch thread (`settings`: create_app's keywords): the service's Python (HTTP, JSON, the batcher) runs on one core per process,
    so one process leaves the second core mostly idle (ML-100K model, one user per request, 64 connections on
    2 cores beside wrk, benchmarks/serve_load.py: one process 3,466 users/s, `--workers 2` 4,904, p99 22 ms;
    in a probe, a second server left on all threads fought the first over the cores, p99 130-200 ms).

    uvicorn's supervisor runs them: SIGTERM stops every worker after the requests in flight; SIGHUP to this
    process replaces the workers one by one, each new one loading the served model directory and serving
    before its predecessor stops (one that fails to load leaves the old ones serving). The served directory
    is kept in a file the workers read when they start: a POST /reload taken up by one worker writes its
    directory there and sends this process SIGHUP, so every worker follows, one after another: meanwhile
    some answer with the old model (each answer's `model` names its weights). Needs uvicorn >= 0.51 (its
    restart starts each new worker before it stops the old). WORKER_READY_SECONDS is also uvicorn's
    liveness timeout: a wedged worker is replaced after it, and a SIGTERM during a restart waits for it."""
    import tempfile

    import uvicorn

    if reload_token is not None and reload_token_problem(reload_token):  # here, not in a worker that restarts
        raise RecMamlError(f"reload_token: {reload_token_problem(reload_token)}")
    load_checked(model_dir, settings["threads"], settings["device"], settings["history_kind"])  # a bad model fails here
    gc.collect()  # that check's model: the workers load their own
    _log_reload_policy(ReloadPolicy(reload_token, Path(settings["reload_root"]).resolve()))
    # the workers' settings and token travel in their environment (not on a command line), kept while the
    # supervisor may start new workers and restored after
    environment = {WORKERS_ENV: None, RELOAD_TOKEN_ENV: reload_token}
    before = {name: os.environ.get(name) for name in environment}
    handlers = {sig: signal.getsignal(sig) for sig in signal.valid_signals() if signal.getsignal(sig) is not None}
    with tempfile.TemporaryDirectory(prefix="recmaml-serve-") as folder:
        served = Path(folder) / "served"
        served.write_text(str(Path(model_dir).resolve()), encoding="utf-8")
        environment[WORKERS_ENV] = json.dumps({"served": str(served), "supervisor": os.getpid(),
                                                "quiet": logging.getLevelName(log_level.upper()) > logging.INFO,
                                                "settings": settings})
        try:
            _set_environment(environment)
            # a new worker imports torch and loads the model before it answers: uvicorn's 5 s to be ready
            # cut restarts short on a busy machine (its predecessor then kept serving the old model)
            uvicorn.run("recmaml.service:worker_app", factory=True, workers=workers, host=host, port=port,
                        log_level=log_level, access_log=False, timeout_graceful_shutdown=30,
                        timeout_worker_healthcheck=WORKER_READY_SECONDS)
        finally:
            _set_environment(before)
            for sig, handler in handlers.items():  # uvicorn's supervisor replaced them and leaves its own
                with contextlib.suppress(OSError, ValueError, TypeError):
                    signal.signal(sig, handler)
    log.info("stopped; every request in flight was answered")


def _set_environment(values: dict) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def worker_app() -> FastAPI:
    """The app of one worker process of `recmaml serve --workers N` (uvicorn calls it in each new process):
    create_app's settings from WORKERS_ENV, the model directory from the file they share."""
    spec = json.loads(os.environ.pop(WORKERS_ENV))  # what this worker starts stays out of its children's reach
    token = os.environ.pop(RELOAD_TOKEN_ENV, None)
    logging.basicConfig(level=logging.ERROR if spec["quiet"] else logging.INFO, format="%(message)s", force=True)
    served = Path(spec["served"])

    def follow(model_dir: str) -> None:  # the other workers take up what this one took up
        try:
            part = served.with_name(f"served.{os.getpid()}.part")  # one per worker: two reloads at once
            part.write_text(model_dir, encoding="utf-8")
            os.replace(part, served)
            if not hasattr(signal, "SIGHUP") or os.getppid() != spec["supervisor"]:
                raise OSError("no supervisor to signal (no SIGHUP here, or it has stopped)")
            os.kill(spec["supervisor"], signal.SIGHUP)
        except OSError as err:
            log.error("POST /reload: this worker serves %s; the other workers take it up only when they restart "
                      "(%s)", model_dir, err)

    return create_app(served.read_text(encoding="utf-8"), reload_token=token, on_reload=follow, **spec["settings"])


def _log_reload_policy(policy: ReloadPolicy) -> None:
    if policy.token is None:
        log.info("POST /reload is off (set %s to turn it on); SIGHUP reloads the served directory", RELOAD_TOKEN_ENV)
    else:
        log.info("POST /reload is on, with the token; it may take up model directories under %s", policy.root)


__all__ = ["AccessLog", "Batcher", "Loaded", "MAX_BODY_BYTES", "MAX_QUEUE_MS", "Overloaded", "RELOAD_TOKEN_ENV",
           "ReloadPolicy", "WORKERS_ENV", "create_app", "load_checked", "reload_token_problem", "run", "worker_app"]
