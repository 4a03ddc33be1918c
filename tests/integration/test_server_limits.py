"""test_server_limits.py: behaviour that needs its own `vkllm serve` process: the waiting
limit (HTTP 503 with Retry-After), and graceful shutdown on SIGTERM/SIGINT (no new
connections, running requests finish within --shutdown-timeout, the rest are cancelled
with finish_reason "abort" and a closed stream, exit status 0)."""
import json
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import openai  # noqa: E402
from server_util import MODEL_NAME, Server, wait_until  # noqa: E402


def open_stream(server, prompt, max_tokens=3000):
    """A raw streaming completions request; returns the socket after the headers."""
    host, port = server.url.split("//")[1].split(":")
    body = json.dumps({"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens,
                       "ignore_eos": True, "stream": True}).encode()
    s = socket.create_connection((host, int(port)))
    s.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: %d\r\n\r\n" % len(body)).encode() + body)
    return s


def read_until(s, needle, limit=10.0):
    s.settimeout(limit)
    got = b""
    while needle not in got:
        part = s.recv(65536)
        if not part:
            break
        got += part
    return got


def read_all(s, limit=30.0):
    s.settimeout(limit)
    got = b""
    while True:
        part = s.recv(65536)
        if not part:
            return got
        got += part


class WaitingLimit(unittest.TestCase):
    def test_503_when_too_many_wait(self):
        with Server("--max-running-seqs", "1", "--max-waiting", "1") as srv:
            running = 'vkllm:num_requests_running{model_name="%s"}' % MODEL_NAME
            waiting = 'vkllm:num_requests_waiting{model_name="%s"}' % MODEL_NAME
            a = open_stream(srv, "first")
            read_until(a, b"data: ")
            b = open_stream(srv, "second")
            self.assertTrue(wait_until(lambda: srv.metrics()[waiting] == 1, timeout=10))
            self.assertEqual(srv.metrics()[running], 1)
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
            with self.assertRaises(openai.InternalServerError) as cm:
                client.completions.create(model=MODEL_NAME, prompt="third", max_tokens=1)
            self.assertEqual(cm.exception.status_code, 503)
            self.assertEqual(cm.exception.response.headers.get("retry-after"), "1")
            self.assertEqual(srv.metric("request_rejected_busy_total"), 1)
            a.close()
            b.close()
            self.assertTrue(wait_until(lambda: srv.metrics()[running] == 0 and
                                       srv.metrics()[waiting] == 0, timeout=10))
            r = client.completions.create(model=MODEL_NAME, prompt="later", max_tokens=2)
            self.assertEqual(r.usage.completion_tokens, 2)


class Shutdown(unittest.TestCase):
    def test_sigterm_finishes_short_requests_and_cancels_long_ones(self):
        srv = Server("--shutdown-timeout", "3")
        long_stream = open_stream(srv, "long")
        read_until(long_stream, b"data: ")
        short_result = {}

        def short():
            short_result["r"] = srv.post("/v1/completions", {"model": MODEL_NAME,
                                                             "prompt": "short",
                                                             "max_tokens": 40,
                                                             "ignore_eos": True})

        t = threading.Thread(target=short)
        t.start()
        waiting_or_running = 'vkllm:num_requests_running{model_name="%s"}' % MODEL_NAME
        wait_until(lambda: srv.metrics()[waiting_or_running] == 2, timeout=5)
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        # no new connections once stopping
        time.sleep(0.3)
        host, port = srv.url.split("//")[1].split(":")
        with self.assertRaises(OSError):
            socket.create_connection((host, int(port)), timeout=2).close()
        t.join(20)
        status, _, body = short_result["r"]
        self.assertEqual(status, 200)
        self.assertEqual(body["choices"][0]["finish_reason"], "length")
        self.assertEqual(body["usage"]["completion_tokens"], 40)
        rest = read_all(long_stream)
        self.assertIn(b'"finish_reason":"abort"', rest)
        self.assertTrue(rest.rstrip().endswith(b"data: [DONE]\r\n\r\n0") or
                        b"data: [DONE]" in rest, rest[-200:])
        long_stream.close()
        self.assertEqual(srv.proc.wait(20), 0)
        srv.close_pipes()
        self.assertLess(time.time() - t0, 12)
        self.assertTrue(any("cancelled 1" in line for line in srv.stderr_lines),
                        srv.stderr_lines)

    def test_sigint_when_idle_exits_zero_at_once(self):
        srv = Server()
        self.assertEqual(srv.request("GET", "/health")[0], 200)
        t0 = time.time()
        self.assertEqual(srv.stop(signal.SIGINT), 0)
        self.assertLess(time.time() - t0, 5)


if __name__ == "__main__":
    unittest.main(verbosity=2)
