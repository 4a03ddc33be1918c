"""test_openai_api.py: `vkllm serve` through the official `openai` Python client (and raw
HTTP where the client cannot express a case): completions and chat, streamed and not,
n > 1, stop strings, logprobs, echo, token prompts, error statuses (400/401/404/413),
metrics that move with requests, tokenize/detokenize round trips, and the chat page.

The model is synthetic (random weights), so the tests compare the server with itself
(greedy runs, stream vs. whole answer, token prompt vs. text prompt) and with exact
counts (usage, logprob shapes, metric deltas), never with expected prose.
Run by tools/run_integration.sh; tests that need their own server configuration
(busy limits, shutdown) are in test_server_limits.py."""
import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import openai  # noqa: E402
from server_util import MODEL_NAME, shared_server, wait_until  # noqa: E402

server = None
client = None


def setUpModule():
    global server, client
    server = shared_server()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key or "none",
                           max_retries=0, timeout=120)


def tearDownModule():
    server.stop()


def greedy_completion(prompt, max_tokens=12, **kw):
    return client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=max_tokens,
                                     temperature=0, **kw)


class Completions(unittest.TestCase):
    def test_models_list(self):
        models = client.models.list()
        self.assertEqual([m.id for m in models.data], [MODEL_NAME])

    def test_greedy_is_deterministic_with_exact_usage(self):
        a = greedy_completion("The quick brown fox", max_tokens=10)
        b = greedy_completion("The quick brown fox", max_tokens=10)
        self.assertEqual(a.choices[0].text, b.choices[0].text)
        self.assertEqual(a.object, "text_completion")
        self.assertEqual(a.model, MODEL_NAME)
        self.assertTrue(a.id.startswith("cmpl-"))
        self.assertNotEqual(a.id, b.id)
        self.assertEqual(a.choices[0].finish_reason, "length")
        self.assertEqual(a.usage.completion_tokens, 10)
        status, _, tok = server.post("/tokenize", {"prompt": "The quick brown fox"})
        self.assertEqual(status, 200)
        self.assertEqual(a.usage.prompt_tokens, tok["count"])
        self.assertEqual(a.usage.total_tokens, tok["count"] + 10)

    def test_seeded_sampling_repeats(self):
        kw = dict(model=MODEL_NAME, prompt="Once upon a time", max_tokens=12, temperature=1.0,
                  top_p=0.9, seed=1234)
        a = client.completions.create(**kw)
        b = client.completions.create(**kw)
        self.assertEqual(a.choices[0].text, b.choices[0].text)

    def test_stream_equals_whole_answer(self):
        whole = greedy_completion("Streaming test", max_tokens=16)
        chunks = list(client.completions.create(
            model=MODEL_NAME, prompt="Streaming test", max_tokens=16, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        self.assertEqual(text, whole.choices[0].text)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        self.assertEqual(finishes[-1], "length")
        self.assertTrue(all(f is None for f in finishes[:-1]))
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 16)
        self.assertEqual(chunks[-1].usage.prompt_tokens, whole.usage.prompt_tokens)
        self.assertTrue(all(c.usage is None for c in chunks[:-1]))

    def test_n_choices(self):
        r = client.completions.create(model=MODEL_NAME, prompt="Pick", max_tokens=6, n=3,
                                      temperature=1.0, seed=7)
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1, 2])
        self.assertEqual(r.usage.completion_tokens, 18)
        self.assertTrue(all(c.finish_reason == "length" for c in r.choices))
        # streamed: every index gets text and exactly one finish reason
        seen, finished = {}, {}
        for c in client.completions.create(model=MODEL_NAME, prompt="Pick", max_tokens=6, n=2,
                                           temperature=1.0, seed=7, stream=True):
            for ch in c.choices:
                seen[ch.index] = seen.get(ch.index, "") + ch.text
                if ch.finish_reason:
                    finished[ch.index] = finished.get(ch.index, 0) + 1
        self.assertEqual(sorted(seen), [0, 1])
        self.assertEqual(finished, {0: 1, 1: 1})

    def test_stop_string_cuts_before_it(self):
        full = greedy_completion("Stop here", max_tokens=24).choices[0].text
        # a 3-character stop string whose first occurrence is past the start
        stop = None
        for p in range(3, len(full) - 3):
            cand = full[p:p + 3]
            if cand.strip() and full.find(cand) == p and "\ufffd" not in cand:
                stop = cand
                break
        self.assertIsNotNone(stop, "no usable stop string in %r" % full)
        r = greedy_completion("Stop here", max_tokens=24, stop=[stop, "never-occurs-xyz"])
        self.assertEqual(r.choices[0].text, full[:full.find(stop)])
        self.assertEqual(r.choices[0].finish_reason, "stop")
        r2 = greedy_completion("Stop here", max_tokens=24, stop=stop, stream=True)
        text = "".join(c.choices[0].text for c in r2 if c.choices)
        self.assertEqual(text, full[:full.find(stop)])

    def test_logprobs(self):
        r = greedy_completion("Log probabilities", max_tokens=8, logprobs=3)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 8)
        self.assertEqual(len(lp.token_logprobs), 8)
        self.assertEqual(len(lp.top_logprobs), 8)
        self.assertEqual(len(lp.text_offset), 8)
        self.assertEqual(lp.text_offset, sorted(lp.text_offset))
        for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
            self.assertLessEqual(chosen, 1e-6)
            self.assertTrue(1 <= len(top) <= 3)
            # greedy: the chosen token is the most likely one
            self.assertAlmostEqual(chosen, max(top.values()), places=4)
        # logprobs=0: the chosen token's logprob, no alternatives
        r0 = greedy_completion("Log probabilities", max_tokens=4, logprobs=0)
        self.assertEqual(len(r0.choices[0].logprobs.token_logprobs), 4)
        self.assertTrue(all(t == {} for t in r0.choices[0].logprobs.top_logprobs))

    def test_echo_and_token_prompts(self):
        prompt = "Echo this"
        plain = greedy_completion(prompt, max_tokens=6).choices[0].text
        echoed = greedy_completion(prompt, max_tokens=6, echo=True).choices[0].text
        self.assertEqual(echoed, prompt + plain)
        _, _, tok = server.post("/tokenize", {"prompt": prompt})
        by_ids = greedy_completion(tok["tokens"], max_tokens=6)
        self.assertEqual(by_ids.choices[0].text, plain)
        self.assertEqual(by_ids.usage.prompt_tokens, tok["count"])

    def test_batched_prompts(self):
        r = greedy_completion(["First prompt", "Second one"], max_tokens=5)
        self.assertEqual(len(r.choices), 2)
        by_index = {c.index: c.text for c in r.choices}
        self.assertEqual(by_index[0], greedy_completion("First prompt", max_tokens=5).choices[0].text)
        self.assertEqual(by_index[1], greedy_completion("Second one", max_tokens=5).choices[0].text)
        self.assertEqual(r.usage.completion_tokens, 10)


class Chat(unittest.TestCase):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say something."}]

    def test_chat_whole_and_stream_agree(self):
        r = client.chat.completions.create(model=MODEL_NAME, messages=self.messages,
                                           max_tokens=12, temperature=0)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.usage.completion_tokens, 12)
        _, _, tok = server.post("/tokenize", {"messages": self.messages})
        self.assertEqual(r.usage.prompt_tokens, tok["count"])
        chunks = list(client.chat.completions.create(
            model=MODEL_NAME, messages=self.messages, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, r.choices[0].message.content)
        self.assertEqual([c.choices[0].finish_reason for c in chunks if c.choices][-1], "length")
        self.assertEqual(chunks[-1].usage.total_tokens, r.usage.total_tokens)

    def test_chat_n_and_logprobs(self):
        r = client.chat.completions.create(model=MODEL_NAME, messages=self.messages,
                                           max_completion_tokens=5, temperature=0, n=2,
                                           logprobs=True, top_logprobs=2)
        self.assertEqual(len(r.choices), 2)
        self.assertEqual(r.choices[0].message.content, r.choices[1].message.content,
                         "greedy samples agree")
        for c in r.choices:
            content = c.logprobs.content
            self.assertEqual(len(content), 5)
            for e in content:
                self.assertEqual(len(e.top_logprobs), 2)
                self.assertAlmostEqual(e.logprob, e.top_logprobs[0].logprob, places=4)
                self.assertGreaterEqual(e.top_logprobs[0].logprob, e.top_logprobs[1].logprob)
                self.assertIsInstance(e.bytes, list)

    def test_unknown_parameters_are_ignored(self):
        r = client.chat.completions.create(model=MODEL_NAME, messages=self.messages,
                                           max_tokens=2, extra_body={"not_a_param": {"x": 1}},
                                           user="someone", presence_penalty=0.5,
                                           frequency_penalty=0.5)
        self.assertEqual(r.usage.completion_tokens, 2)


class Errors(unittest.TestCase):
    def assert_error(self, exc, status, param):
        self.assertEqual(exc.status_code, status)
        body = exc.response.json()
        self.assertEqual(body["error"]["type"], "invalid_request_error")
        self.assertEqual(body["error"]["param"], param)
        self.assertIn("message", body["error"])

    def test_invalid_parameters_400(self):
        cases = [dict(temperature=-1), dict(top_p=0), dict(n=0), dict(max_tokens=0),
                 dict(logprobs=50), dict(stop=[""]), dict(presence_penalty=9)]
        for kw in cases:
            with self.subTest(kw=kw):
                with self.assertRaises(openai.BadRequestError) as cm:
                    client.completions.create(model=MODEL_NAME, prompt="x", **kw)
                self.assert_error(cm.exception, 400, list(kw)[0])
        with self.assertRaises(openai.BadRequestError) as cm:
            client.chat.completions.create(model=MODEL_NAME,
                                           messages=[{"role": "robot", "content": "x"}])
        self.assert_error(cm.exception, 400, "messages[0].role")
        with self.assertRaises(openai.BadRequestError) as cm:
            client.completions.create(model=MODEL_NAME, prompt=[1, 10 ** 9])
        self.assert_error(cm.exception, 400, "prompt")

    def test_malformed_json_400(self):
        status, _, body = server.request("POST", "/v1/completions", raw=b'{"prompt": "a",')
        self.assertEqual(status, 400)
        self.assertIn("malformed JSON", json.loads(body)["error"]["message"])

    def test_unknown_model_404(self):
        with self.assertRaises(openai.NotFoundError):
            client.completions.create(model="no-such-model", prompt="x", max_tokens=1)

    def test_missing_or_wrong_key_401(self):
        if not server.api_key:
            self.skipTest("server runs without --api-key")
        bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad.models.list()
        status, headers, _ = server.request("GET", "/v1/models", headers={})
        self.assertEqual(status, 401)
        self.assertEqual(headers.get("WWW-Authenticate"), "Bearer")
        # health, metrics and the page stay open
        self.assertEqual(server.request("GET", "/health", headers={})[0], 200)
        self.assertEqual(server.request("GET", "/metrics", headers={})[0], 200)

    def test_body_over_limit_413(self):
        big = {"prompt": "x" * (9 << 20), "max_tokens": 1}  # over the default 8 MiB
        status, _, body = server.post("/v1/completions", big)
        self.assertEqual(status, 413)
        self.assertIn("exceeds", body["error"]["message"])
        # the connection-level refusal leaves the server healthy
        self.assertEqual(server.request("GET", "/health")[0], 200)

    def test_wrong_method_and_path(self):
        self.assertEqual(server.request("GET", "/v1/completions")[0], 405)
        self.assertEqual(server.request("GET", "/v2/nothing")[0], 404)


class Operations(unittest.TestCase):
    def test_metrics_move_with_requests(self):
        before = server.metrics()
        r = greedy_completion("Count me", max_tokens=7)
        after = server.metrics()
        key = lambda n, extra="": 'vkllm:%s{model_name="%s"%s}' % (n, MODEL_NAME, extra)
        self.assertEqual(after[key("generation_tokens_total")] -
                         before[key("generation_tokens_total")], 7)
        # the engine counts prompt tokens it computed: all but the prefix-cache hits
        self.assertEqual(after[key("prompt_tokens_total")] - before[key("prompt_tokens_total")],
                         r.usage.prompt_tokens - r.usage.prompt_tokens_details.cached_tokens)
        fin = ',finished_reason="length"'
        self.assertEqual(after[key("request_success_total", fin)] -
                         before[key("request_success_total", fin)], 1)
        for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
            self.assertEqual(after[key(h + "_count")] - before[key(h + "_count")], 1)
        self.assertEqual(after[key("inter_token_latency_seconds_count")] -
                         before[key("inter_token_latency_seconds_count")], 6)
        self.assertEqual(after[key("num_requests_running")], 0)
        self.assertIn(key("kv_cache_usage_perc"), after)
        self.assertGreater(after[key("prefix_cache_queries_total")], 0)

    def test_prefix_cache_hits_are_counted(self):
        prompt = "A shared prefix that is long enough to fill whole KV blocks. " * 4
        greedy_completion(prompt, max_tokens=1)
        before = server.metrics()
        greedy_completion(prompt, max_tokens=1)
        after = server.metrics()
        key = 'vkllm:prefix_cache_hits_total{model_name="%s"}' % MODEL_NAME
        self.assertGreater(after[key], before[key])

    def test_tokenize_round_trip(self):
        text = "Hello world, round trip!"
        status, _, t = server.post("/tokenize", {"prompt": text, "add_special_tokens": False})
        self.assertEqual(status, 200)
        self.assertEqual(t["count"], len(t["tokens"]))
        self.assertGreater(t["max_model_len"], 0)
        status, _, d = server.post("/detokenize", {"tokens": t["tokens"]})
        self.assertEqual(status, 200)
        self.assertEqual(d["prompt"], text)
        _, _, with_bos = server.post("/tokenize", {"prompt": text})
        self.assertEqual(with_bos["tokens"][-t["count"]:], t["tokens"])
        _, _, strs = server.post("/tokenize", {"prompt": text, "add_special_tokens": False,
                                               "return_token_strs": True})
        self.assertEqual("".join(strs["token_strs"]), text)
        status, _, err = server.post("/detokenize", {"tokens": [10 ** 9]})
        self.assertEqual(status, 400)
        self.assertEqual(err["error"]["param"], "tokens")

    def test_client_disconnect_cancels(self):
        before = server.metrics()
        abort = 'vkllm:request_success_total{model_name="%s",finished_reason="abort"}' % MODEL_NAME
        # a raw socket so that closing it is an unambiguous disconnect
        host, port = server.url.split("//")[1].split(":")
        body = json.dumps({"model": MODEL_NAME, "prompt": "Run long", "max_tokens": 3000,
                           "ignore_eos": True, "stream": True}).encode()
        head = ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n" % len(body))
        if server.api_key:
            head += "Authorization: Bearer %s\r\n" % server.api_key
        s = socket.create_connection((host, int(port)))
        s.sendall(head.encode() + b"\r\n" + body)
        got = b""
        while got.count(b"data: ") < 5:
            got += s.recv(4096)
        self.assertIn(b"text/event-stream", got)
        running = 'vkllm:num_requests_running{model_name="%s"}' % MODEL_NAME
        self.assertEqual(server.metrics()[running], 1)
        t0 = time.time()
        s.close()
        self.assertTrue(wait_until(lambda: server.metrics()[running] == 0, timeout=10),
                        "request still running after the client left")
        self.assertLess(time.time() - t0, 5)
        after = server.metrics()
        self.assertEqual(after[abort] - before[abort], 1)
        used = 'vkllm:kv_cache_blocks_used{model_name="%s"}' % MODEL_NAME
        self.assertEqual(after[used], 0, "the cancelled request's KV blocks are freed")
        gen = 'vkllm:generation_tokens_total{model_name="%s"}' % MODEL_NAME
        self.assertLess(after[gen] - before[gen], 2500, "generation stopped early")

    def test_health_and_chat_page(self):
        status, _, body = server.request("GET", "/health")
        self.assertEqual((status, body), (200, b""))
        status, headers, page = server.request("GET", "/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        self.assertIn(b"/v1/chat/completions", page)


if __name__ == "__main__":
    unittest.main(verbosity=2)
