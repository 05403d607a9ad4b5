"""A small Python client of an xpd cluster's public API (xpd.v1.Generation)."""

from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import grpc

from ._stubs import generation_pb2 as pb
from ._stubs import generation_pb2_grpc as pb_grpc

Prompt = Union[str, Sequence[int]]
Message = Mapping[str, object]

_FINISH_REASONS = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
}


class XpdError(Exception):
    """A failed call: the router's gRPC status.

    ``code`` is the ``grpc.StatusCode`` (``code.name`` is e.g.
    ``"INVALID_ARGUMENT"``), ``details`` the server's message.
    """

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "XpdError":
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: List[Tuple[int, float]] = field(default_factory=list)  # (token id, log-prob)


@dataclass
class Chunk:
    """One streamed message: the tokens and text since the previous one.

    The last chunk carries ``finish_reason`` ("stop" or "length") and usage.
    """

    token_ids: List[int]
    text: str
    logprobs: List[TokenLogprob]
    finish_reason: Optional[str] = None
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    request_id: str = ""


@dataclass
class Completion:
    """A whole completion."""

    text: str
    token_ids: List[int]
    finish_reason: Optional[str]
    prompt_tokens: int
    completion_tokens: int
    request_id: str
    logprobs: List[TokenLogprob] = field(default_factory=list)


@dataclass
class Model:
    id: str
    context_length: int  # prompt + completion tokens one request can use
    vocab_size: int


def _logprobs(messages) -> List[TokenLogprob]:
    return [
        TokenLogprob(lp.token_id, lp.logprob, [(t.token_id, t.logprob) for t in lp.top])
        for lp in messages
    ]


def _chunk(response) -> Chunk:
    last = response.finish_reason != pb.FINISH_REASON_UNSPECIFIED
    return Chunk(
        token_ids=list(response.token_ids),
        text=response.text,
        logprobs=_logprobs(response.logprobs),
        finish_reason=_FINISH_REASONS.get(response.finish_reason),
        prompt_tokens=response.usage.prompt_tokens if last else None,
        completion_tokens=response.usage.completion_tokens if last else None,
        request_id=response.request_id,
    )


def _chat(messages: Iterable[Message], add_generation_prompt: bool) -> "pb.Chat":
    """OpenAI-style messages: {"role", "content", "tool_calls"}."""
    chat = pb.Chat(add_generation_prompt=add_generation_prompt)
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise TypeError(f"messages[{i}] must be a mapping with a string 'role'")
        m = chat.messages.add(role=message["role"])
        content = message.get("content")
        if content is not None:
            if not isinstance(content, str):
                raise TypeError(f"messages[{i}].content must be a string")
            m.content = content
        for call in message.get("tool_calls") or []:
            function = call.get("function", call)  # OpenAI's nesting, or flat
            m.tool_calls.add(
                type=call.get("type", "function"),
                name=function.get("name", ""),
                arguments=function.get("arguments", ""),
            )
    return chat


class GenerationStream:
    """Iterates the Chunks of a running generation.

    ``cancel()`` (or leaving a ``with`` block, or ``close()``) stops it and
    frees its KV cache on the cluster. Errors raise ``XpdError`` from the
    iteration. After the last chunk, ``finish_reason``, ``prompt_tokens`` and
    ``completion_tokens`` are set.
    """

    def __init__(self, call):
        self._call = call
        self.request_id = ""
        self.finish_reason: Optional[str] = None
        self.prompt_tokens: Optional[int] = None
        self.completion_tokens: Optional[int] = None

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        try:
            response = next(self._call)
        except grpc.RpcError as error:
            raise XpdError.from_rpc_error(error) from None
        chunk = _chunk(response)
        self.request_id = chunk.request_id or self.request_id
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.prompt_tokens = chunk.prompt_tokens
            self.completion_tokens = chunk.completion_tokens
        return chunk

    def cancel(self) -> None:
        self._call.cancel()

    close = cancel

    def __enter__(self) -> "GenerationStream":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


class Client:
    """A client of the router's xpd.v1.Generation service.

    >>> with Client("127.0.0.1:50051") as xpd:
    ...     print(xpd.generate("Hello", max_tokens=16, temperature=0).text)

    ``timeout`` (seconds, None = none) bounds every call unless a call passes
    its own. ``wait_for_ready`` makes calls wait for the router to become
    reachable instead of failing at once with UNAVAILABLE.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: Optional[float] = None,
        wait_for_ready: bool = False,
        channel: Optional[grpc.Channel] = None,
    ):
        self._channel = channel or grpc.insecure_channel(address)
        self._stub = pb_grpc.GenerationStub(self._channel)
        self._default_timeout = timeout
        self._wait_for_ready = wait_for_ready

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- generation -----------------------------------------------------------

    def generate(self, prompt: Prompt, max_tokens: int = 16, **options) -> Completion:
        """Completes a text prompt (str) or token ids (a sequence of ints).

        Options: temperature (0 = greedy; default 1), top_p, top_k, seed,
        stop (str or list of str), stop_token_ids, ignore_eos, logprobs,
        top_logprobs, model, request_id, timeout.
        """
        return self._collect(self.generate_stream(prompt, max_tokens, **options))

    def generate_stream(self, prompt: Prompt, max_tokens: int = 16, **options) -> GenerationStream:
        """Like generate, but yields Chunks as tokens are produced."""
        request = self._request(max_tokens, options)
        if isinstance(prompt, str):
            request.text = prompt
        elif isinstance(prompt, (bytes, bytearray)):
            raise TypeError("prompt must be a str or a sequence of token ids, not bytes")
        else:
            ids = list(prompt)
            if not all(isinstance(i, int) for i in ids):
                raise TypeError("a token prompt must be a sequence of ints")
            request.tokens.ids.extend(ids)
        return self._start(request, options.get("timeout"))

    def chat(
        self,
        messages: Iterable[Message],
        max_tokens: int = 16,
        *,
        add_generation_prompt: bool = True,
        **options,
    ) -> Completion:
        """Answers a conversation of {"role", "content"} messages with the
        model's chat template (applied by the router)."""
        return self._collect(
            self.chat_stream(
                messages, max_tokens, add_generation_prompt=add_generation_prompt, **options
            )
        )

    def chat_stream(
        self,
        messages: Iterable[Message],
        max_tokens: int = 16,
        *,
        add_generation_prompt: bool = True,
        **options,
    ) -> GenerationStream:
        request = self._request(max_tokens, options)
        request.chat.CopyFrom(_chat(messages, add_generation_prompt))
        return self._start(request, options.get("timeout"))

    # -- text and models ------------------------------------------------------

    def tokenize(
        self,
        text: Optional[str] = None,
        *,
        messages: Optional[Iterable[Message]] = None,
        add_generation_prompt: bool = True,
        model: str = "",
        timeout: Optional[float] = None,
    ) -> List[int]:
        """Token ids of a text, or of chat messages rendered by the template."""
        if (text is None) == (messages is None):
            raise TypeError("give exactly one of text or messages")
        request = pb.TokenizeRequest(model=model)
        if text is not None:
            request.text = text
        else:
            request.chat.CopyFrom(_chat(messages, add_generation_prompt))
        return list(self._unary(self._stub.Tokenize, request, timeout).ids)

    def detokenize(
        self,
        ids: Sequence[int],
        *,
        skip_special_tokens: bool = False,
        model: str = "",
        timeout: Optional[float] = None,
    ) -> str:
        request = pb.DetokenizeRequest(
            model=model, ids=list(ids), skip_special_tokens=skip_special_tokens
        )
        return self._unary(self._stub.Detokenize, request, timeout).text

    def list_models(self, *, timeout: Optional[float] = None) -> List[Model]:
        response = self._unary(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [Model(m.id, m.context_length, m.vocab_size) for m in response.models]

    # -- internals ------------------------------------------------------------

    _SAMPLING = (
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "stop_token_ids",
        "ignore_eos",
        "logprobs",
        "top_logprobs",
    )
    _OTHER = ("model", "request_id", "timeout")

    def _request(self, max_tokens: int, options: Mapping[str, object]) -> "pb.GenerateRequest":
        unknown = set(options) - set(self._SAMPLING) - set(self._OTHER)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        request = pb.GenerateRequest(
            model=options.get("model") or "", request_id=options.get("request_id") or ""
        )
        s = request.sampling
        s.max_tokens = max_tokens  # the router rejects < 1 (INVALID_ARGUMENT)
        for name in ("temperature", "top_p"):
            if options.get(name) is not None:
                setattr(s, name, float(options[name]))
        if options.get("seed") is not None:
            s.seed = int(options["seed"])
        s.top_k = int(options.get("top_k") or 0)
        stop = options.get("stop")
        if stop:
            s.stop.extend([stop] if isinstance(stop, str) else list(stop))
        s.stop_token_ids.extend(options.get("stop_token_ids") or [])
        s.ignore_eos = bool(options.get("ignore_eos", False))
        s.logprobs = bool(options.get("logprobs", False))
        s.top_logprobs = int(options.get("top_logprobs") or 0)
        return request

    def _call_timeout(self, timeout: Optional[float]) -> Optional[float]:
        return self._default_timeout if timeout is None else timeout

    def _start(self, request, timeout: Optional[float]) -> GenerationStream:
        call = self._stub.Generate(
            request, timeout=self._call_timeout(timeout), wait_for_ready=self._wait_for_ready
        )
        return GenerationStream(call)

    def _unary(self, method, request, timeout: Optional[float]):
        try:
            return method(
                request, timeout=self._call_timeout(timeout), wait_for_ready=self._wait_for_ready
            )
        except grpc.RpcError as error:
            raise XpdError.from_rpc_error(error) from None

    @staticmethod
    def _collect(stream: GenerationStream) -> Completion:
        token_ids: List[int] = []
        text: List[str] = []
        logprobs: List[TokenLogprob] = []
        with stream:
            for chunk in stream:
                token_ids.extend(chunk.token_ids)
                text.append(chunk.text)
                logprobs.extend(chunk.logprobs)
        return Completion(
            text="".join(text),
            token_ids=token_ids,
            finish_reason=stream.finish_reason,
            prompt_tokens=stream.prompt_tokens or 0,
            completion_tokens=stream.completion_tokens or 0,
            request_id=stream.request_id,
            logprobs=logprobs,
        )
