"""A chat-completions server on 127.0.0.1 for judge tests: it stands in for the remote service.

Each POST to /v1/chat/completions takes the next scripted action (the last one repeats):
`("ok", text)` a normal completion with usage, `("429", None)` a rate limit with
Retry-After-Ms: 10, `("sleep", seconds)` answer late (a timeout for a short client timeout),
`("malformed", None)` a 200 whose body is not JSON, `("500", None)` a server error,
`("400", "max_tokens")` OpenAI's refusal of a request parameter. Every
request's prompt is recorded, so a test can count what was sent.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Action = tuple[str, Any]


@dataclass
class ScriptedServer:
    script: list[Action]
    answer: Callable[[str], str] | None = None  # prompt -> text, for ("auto", None)
    prompts: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # every request as sent
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    port: int = 0  # 0: any free port; a former server's port to stand in for its restart

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.port_in_use}/v1"

    @property
    def port_in_use(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def next_action(self, prompt: str) -> Action:
        with self.lock:
            self.prompts.append(prompt)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def __enter__(self) -> ScriptedServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)  # the client may have given up (a timeout test)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length))
                prompt = request["messages"][-1]["content"]
                owner.bodies.append(request)
                kind, arg = owner.next_action(prompt)
                if kind == "429":
                    error = {"error": {"message": "rate limited", "type": "rate_limit"}}
                    self._send(429, json.dumps(error).encode(), {"Retry-After-Ms": "10"})
                    return
                if kind == "400":  # arg: the parameter the server refuses
                    error = {"error": {"message": f"Unsupported parameter: '{arg}'",
                                       "type": "invalid_request_error", "param": arg,
                                       "code": "unsupported_parameter"}}  # fmt: skip
                    self._send(400, json.dumps(error).encode())
                    return
                if kind == "500":
                    self._send(500, b'{"error": {"message": "boom"}}')
                    return
                if kind == "malformed":
                    self._send(200, b"<html>not a completion</html>")
                    return
                if kind == "sleep":
                    time.sleep(float(arg))
                    kind, arg = "ok", "0.5"
                text = owner.answer(prompt) if kind == "auto" and owner.answer else str(arg)
                body = {
                    "id": "cmpl-1", "object": "chat.completion", "created": 0,
                    "model": request["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                }  # fmt: skip
                self._send(200, json.dumps(body).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
