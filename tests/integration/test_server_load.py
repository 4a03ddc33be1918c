"""test_server_load.py: `vkllm serve` under load and under malformed input.

Load: 64 clients stream at once (threads, raw HTTP so that the server-sent events are
seen as sent), half completions, half chat. Oracle: each prompt's non-streamed greedy
answer, fetched one request at a time beforehand; every stream's concatenated text must
equal it, with the same finish reason and usage counts, "data: [DONE]" last, one id per
stream. A /metrics poller records how many requests ran at once (it must be more than
one, else the test did not load anything).

Malformed input: a table of bodies the server must refuse with the documented status
and OpenAI-style error (type, param, code, a message naming the problem), while it keeps
serving: /health is checked after each case and a greedy request gives the same text at
the end as at the start. The table holds only what test_openai_api.py and test_curl.sh
do not already cover (they have: malformed JSON on /v1/completions, max_tokens=0 and other
range errors, the 9 MB body 413 with Content-Length, the unknown model on completions
through the client).

Runs against the shared server of tools/run_integration.sh ($VKLLM_TEST_URL), or starts
its own (see server_util.py)."""
import http.client
import json
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from server_util import MODEL_NAME, shared_server  # noqa: E402

N_CLIENTS = 64
MAX_TOKENS = 8

server = None


def setUpModule():
    global server
    server = shared_server()


def tearDownModule():
    server.stop()


def host_port():
    host, port = server.url.split("//")[1].split(":")
    return host, int(port)


def connection(timeout=120):
    return http.client.HTTPConnection(*host_port(), timeout=timeout)


def generation_body(i, stream):
    """Request i of the load: even ones are completions, odd ones chat."""
    body = {"model": MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0}
    if i % 2 == 0:
        path = "/v1/completions"
        body["prompt"] = "Client %d writes about subject %d:" % (i, (i * 7) % 13)
    else:
        path = "/v1/chat/completions"
        body["messages"] = [{"role": "user", "content": "Client %d asks question %d." % (i, i % 5)}]
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return path, body


def whole_answer(i):
    """(text, finish_reason, usage) of request i, not streamed."""
    path, body = generation_body(i, stream=False)
    status, _, r = server.post(path, body)
    assert status == 200, (status, r)
    choice = r["choices"][0]
    text = choice["text"] if "text" in choice else choice["message"]["content"]
    return text, choice["finish_reason"], r["usage"]


def stream_answer(i, barrier):
    """Streams request i once every client is ready; returns what the stream held."""
    path, body = generation_body(i, stream=True)
    out = {"status": None, "text": "", "finishes": [], "usage": None, "ids": set(),
           "done_last": False, "lines_after_done": 0, "error": None, "objects": set()}
    conn = connection()
    try:
        barrier.wait(timeout=60)
        conn.request("POST", path, body=json.dumps(body), headers=server.headers())
        resp = conn.getresponse()
        out["status"] = resp.status
        out["content_type"] = resp.getheader("Content-Type", "")
        done = False
        for raw in resp:  # http.client undoes the chunked encoding line by line
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                continue
            if done:
                out["lines_after_done"] += 1
                continue
            if not line.startswith("data: "):
                raise AssertionError("not an SSE data line: %r" % line)
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                continue
            chunk = json.loads(data)
            out["ids"].add(chunk["id"])
            out["objects"].add(chunk["object"])
            for c in chunk["choices"]:
                if "text" in c:
                    out["text"] += c["text"]
                else:
                    out["text"] += c["delta"].get("content") or ""
                if c.get("finish_reason"):
                    out["finishes"].append(c["finish_reason"])
            if chunk.get("usage"):
                out["usage"] = chunk["usage"]
        out["done_last"] = done
    except Exception as e:  # reported by the test with the client's index
        out["error"] = repr(e)
    finally:
        conn.close()
    return out


class Load(unittest.TestCase):
    def test_64_concurrent_streams_match_the_greedy_answers(self):
        t0 = time.time()
        want = [whole_answer(i) for i in range(N_CLIENTS)]
        t_ref = time.time() - t0
        self.assertTrue(all(w[2]["completion_tokens"] > 0 for w in want))

        running = 'vkllm:num_requests_running{model_name="%s"}' % MODEL_NAME
        peak = [0.0]
        stop = threading.Event()

        def poll_running():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], server.metrics()[running])
                except Exception:  # a poll racing the end of the test
                    pass
                time.sleep(0.02)

        barrier = threading.Barrier(N_CLIENTS)
        results = [None] * N_CLIENTS

        def client(i):
            results[i] = stream_answer(i, barrier)

        poller = threading.Thread(target=poll_running, daemon=True)
        poller.start()
        t0 = time.time()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(N_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        t_load = time.time() - t0
        stop.set()
        poller.join(5)
        print("\n  reference (one at a time) %.2f s, %d concurrent streams %.2f s, peak running %d"
              % (t_ref, N_CLIENTS, t_load, peak[0]), file=sys.stderr)

        for i, (r, (text, finish, usage)) in enumerate(zip(results, want)):
            with self.subTest(client=i):
                self.assertIsNotNone(r, "client thread did not finish")
                self.assertIsNone(r["error"])
                self.assertEqual(r["status"], 200)
                self.assertTrue(r["content_type"].startswith("text/event-stream"))
                self.assertTrue(r["done_last"], "no data: [DONE]")
                self.assertEqual(r["lines_after_done"], 0, "data after [DONE]")
                self.assertEqual(len(r["ids"]), 1, "one id per stream")
                self.assertEqual(r["objects"], {"text_completion" if i % 2 == 0
                                                else "chat.completion.chunk"})
                self.assertEqual(r["text"], text, "stream %d differs from its greedy answer" % i)
                self.assertEqual(r["finishes"], [finish])
                self.assertIsNotNone(r["usage"], "no usage chunk")
                for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
                    self.assertEqual(r["usage"][k], usage[k], k)
                self.assertEqual(r["usage"]["total_tokens"],
                                 r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"])
        ids = set().union(*(r["ids"] for r in results if r))
        self.assertEqual(len(ids), N_CLIENTS, "every stream has its own id")
        self.assertGreater(peak[0], 1, "the streams never ran concurrently")
        m = server.metrics()
        self.assertEqual(m[running], 0)
        self.assertEqual(m['vkllm:kv_cache_blocks_used{model_name="%s"}' % MODEL_NAME], 0,
                         "every stream's KV blocks are freed")


def raw_exchange(payload, read_timeout=10.0):
    """Sends raw bytes on a new connection; returns everything read until it closes."""
    s = socket.create_connection(host_port())
    try:
        s.sendall(payload)
        s.settimeout(read_timeout)
        got = b""
        while True:
            part = s.recv(65536)
            if not part:
                return got
            got += part
            if b"\r\n\r\n" in got:
                head, _, rest = got.partition(b"\r\n\r\n")
                for h in head.split(b"\r\n"):
                    if h.lower().startswith(b"content-length:") and \
                            len(rest) >= int(h.split(b":")[1]):
                        return got
    finally:
        s.close()


def auth_header():
    return "Authorization: Bearer %s\r\n" % server.api_key if server.api_key else ""


# (name, path, body bytes, status, param, code, words in the message)
LONG_IDS = [1000] * 5000  # over the 4096-token context of the integration model
MALFORMED = [
    ("bad JSON on chat", "/v1/chat/completions", b'{"model": "tiny", "messages": [',
     400, None, None, "malformed JSON"),
    ("empty body", "/v1/completions", b"", 400, None, None, "malformed JSON"),
    ("JSON array body", "/v1/completions", b"[1, 2, 3]", 400, None, None, "JSON object"),
    ("duplicate key", "/v1/completions", b'{"prompt": "x", "prompt": "y"}', 400, None, None,
     "duplicate"),
    ("max_tokens a string", "/v1/completions", {"prompt": "x", "max_tokens": "x"},
     400, "max_tokens", None, "integer"),
    ("temperature a list", "/v1/completions", {"prompt": "x", "temperature": []},
     400, "temperature", None, "number"),
    ("messages a string", "/v1/chat/completions", {"messages": "hello"},
     400, "messages", None, "array"),
    ("messages an object", "/v1/chat/completions",
     {"messages": {"role": "user", "content": "x"}}, 400, "messages", None, "array"),
    ("prompt an object", "/v1/completions", {"prompt": {"text": "x"}}, 400, "prompt", None,
     "must be"),
    ("stream a string", "/v1/completions", {"prompt": "x", "stream": "yes"},
     400, "stream", None, "boolean"),
    ("n fractional", "/v1/completions", {"prompt": "x", "n": 1.5}, 400, "n", None, "integer"),
    ("negative max_tokens", "/v1/completions", {"prompt": "x", "max_tokens": -5},
     400, "max_tokens", None, "out of range"),
    ("negative max_completion_tokens", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -1},
     400, "max_completion_tokens", None, "out of range"),
    ("token prompt over the context", "/v1/completions",
     {"model": MODEL_NAME, "prompt": LONG_IDS, "max_tokens": 1},
     400, "prompt", "context_length_exceeded", "5000 tokens"),
    ("text prompt over the context", "/v1/completions",
     {"prompt": "hello " * 5000, "max_tokens": 1}, 400, "prompt", "context_length_exceeded",
     "context"),
    ("chat over the context", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": "hello " * 5000}], "max_tokens": 1},
     400, "messages", "context_length_exceeded", "context"),
    ("unknown model on chat", "/v1/chat/completions",
     {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]},
     404, "model", "model_not_found", "gpt-4"),
    ("invalid UTF-8 byte", "/v1/completions", b'{"model": "tiny", "prompt": "ab\xff\xfe"}',
     400, None, None, "0xff"),
    ("truncated UTF-8 sequence", "/v1/chat/completions",
     b'{"messages": [{"role": "user", "content": "\xe2\x82"}]}', 400, None, None, "0xe2"),
    ("overlong UTF-8 encoding", "/v1/completions", b'{"prompt": "\xc0\xaf"}',
     400, None, None, "0xc0"),
    ("lone surrogate escape", "/v1/completions", b'{"prompt": "a\\ud800b"}',
     400, None, None, "Unicode"),
    ("NUL escape", "/v1/completions", b'{"prompt": "a\\u0000b"}', 400, None, None, "u0000"),
    ("invalid UTF-8 on /tokenize", "/tokenize", b'{"prompt": "\xff"}', 400, None, None, "0xff"),
    ("tokenize prompt a number", "/tokenize", {"prompt": 5}, 400, "prompt", None, "string"),
]


class Malformed(unittest.TestCase):
    def assert_healthy(self, after):
        status, _, body = server.request("GET", "/health", timeout=10)
        self.assertEqual((status, body), (200, b""), "unhealthy after %s" % after)

    def assert_error_body(self, body, status, param, code, words):
        err = json.loads(body)["error"]
        self.assertEqual(err["type"], "invalid_request_error")
        self.assertEqual(err["param"], param)
        self.assertEqual(err["code"], code)
        self.assertIn(words, err["message"])

    def test_table_of_malformed_requests(self):
        before = greedy("Still serving?")
        for name, path, body, status, param, code, words in MALFORMED:
            with self.subTest(case=name):
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                got_status, headers, got = server.request("POST", path, raw=raw)
                self.assertEqual(got_status, status, got[:300])
                self.assertTrue(headers.get("Content-Type", "").startswith("application/json"))
                self.assert_error_body(got, status, param, code, words)
                self.assert_healthy(name)
        self.assertEqual(greedy("Still serving?"), before)

    def test_huge_declared_body_refused_before_it_is_sent(self):
        # Over 8x the 8 MiB limit: answered from the headers, the body never read.
        head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                "\r\n%sContent-Length: %d\r\n\r\n" % (auth_header(), 100 << 20))
        t0 = time.time()
        got = raw_exchange(head.encode() + b'{"messages": [')
        self.assertTrue(got.startswith(b"HTTP/1.1 413"), got[:200])
        self.assertLess(time.time() - t0, 5)
        self.assert_error_body(got.partition(b"\r\n\r\n")[2], 413, None, None, "too large")
        self.assert_healthy("a 100 MiB Content-Length")

    def test_huge_chunked_body_413(self):
        # No Content-Length: the server counts the chunks as they come.
        def chunks():
            yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
            for _ in range(9):
                yield b"x" * (1 << 20)
            yield b'"}]}'
        conn = connection(timeout=60)
        try:
            conn.request("POST", "/v1/chat/completions", body=chunks(), encode_chunked=True,
                         headers=dict(server.headers(), **{"Transfer-Encoding": "chunked"}))
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        self.assertEqual(resp.status, 413, body[:200])
        self.assert_error_body(body, 413, None, None, "exceeds the limit")
        self.assert_healthy("a 9 MiB chunked body")

    def test_truncated_body_and_abandoned_connection(self):
        # A client that promises 1000 bytes, sends 10 and leaves must not wedge the server.
        head = ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "%sContent-Length: 1000\r\n\r\n" % auth_header())
        before = greedy("After the abandoned body")
        s = socket.create_connection(host_port())
        s.sendall(head.encode() + b'{"prompt":')
        s.close()
        self.assert_healthy("an abandoned half-sent body")
        self.assertEqual(greedy("After the abandoned body"), before)


def greedy(prompt):
    status, _, r = server.post("/v1/completions", {"model": MODEL_NAME, "prompt": prompt,
                                                   "max_tokens": 6, "temperature": 0})
    assert status == 200, (status, r)
    return r["choices"][0]["text"]


if __name__ == "__main__":
    unittest.main(verbosity=2)
