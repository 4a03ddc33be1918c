"""test_chat_page.py: the chat page (GET /) in headless Chromium, driven through the
DevTools protocol over --remote-debugging-pipe (NUL-separated JSON on fds 3 and 4, so
no WebSocket library is needed). The test types the API key and a message, presses
Enter, watches the answer grow while it streams, and checks the final text against
the same greedy request made through the API; a second turn must carry the history.
Needs Debian's `chromium` (tools/run_integration.sh installs it when missing)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from server_util import MODEL_NAME, shared_server  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """A headless Chromium and one page target, spoken to over the DevTools pipe."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="vkllm-chromium-")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-dev-shm-usage", "--remote-debugging-pipe",
                 "--user-data-dir=" + self.profile, "about:blank"]
        # bash places the pipe ends on the fds Chromium expects (3: commands in, 4: out)
        cmd = 'exec "%s" %s 3<&%d 4>&%d' % (CHROMIUM, " ".join(flags), to_chrome_r,
                                            from_chrome_w)
        self.proc = subprocess.Popen(["bash", "-c", cmd], pass_fds=(to_chrome_r, from_chrome_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.next_id = 0
        self.buffer = b""
        self.session = None

    def call(self, method, params=None, session=True, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError("%s: %s" % (method, reply["error"]))
                    return reply["result"]
            chunk = os.read(self.from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buffer += chunk
        raise TimeoutError(method)

    def open(self, url):
        target = self.call("Target.createTarget", {"url": url}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.wait_for("document.readyState === 'complete' && !!document.getElementById('input')")

    def js(self, expression):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError("page JS failed: %s" % r["exceptionDetails"])
        return r["result"].get("value")

    def type_into(self, selector, text):
        self.js("(() => { const e = document.querySelector(%s); e.focus(); e.select && e.select();"
                " })()" % json.dumps(selector))
        self.call("Input.insertText", {"text": text})

    def press_enter(self):
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                 "windowsVirtualKeyCode": 13, "text": "\r"})

    def wait_for(self, expression, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.js(expression)
            if v:
                return v
            time.sleep(0.05)
        raise TimeoutError(expression)

    def close(self):
        try:
            self.call("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_chrome)
        os.close(self.from_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)


@unittest.skipUnless(CHROMIUM, "chromium is not installed")
class ChatPage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = shared_server()
        cls.browser = DevTools()
        cls.browser.open(cls.server.url + "/")

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.server.stop()

    def api_answer(self, messages, max_tokens):
        status, _, body = self.server.post("/v1/chat/completions", {
            "model": MODEL_NAME, "messages": messages, "temperature": 0,
            "max_tokens": max_tokens})
        self.assertEqual(status, 200, body)
        return body["choices"][0]["message"]["content"]

    def send_and_watch(self, text):
        """Types text, presses Enter; returns (final answer, distinct lengths seen)."""
        b = self.browser
        count = b.js("document.querySelectorAll('.msg.assistant').length")
        b.type_into("#input", text)
        b.press_enter()
        b.wait_for("document.querySelectorAll('.msg.assistant').length > %d" % count)
        lengths = set()
        deadline = time.time() + 60
        while time.time() < deadline:
            state, answer = b.js("[document.getElementById('status').dataset.state,"
                                 " [...document.querySelectorAll('.msg.assistant')].pop()"
                                 ".textContent]")
            lengths.add(len(answer))
            if state in ("done", "error"):
                break
            time.sleep(0.02)
        self.assertEqual(state, "done", b.js("document.getElementById('status').textContent"))
        return answer, lengths

    def test_typed_message_streams_the_greedy_answer(self):
        b = self.browser
        if self.server.api_key:
            b.type_into("#apikey", self.server.api_key)
            b.js("document.getElementById('apikey').dispatchEvent(new Event('change'))")
        b.type_into("#temperature", "0")
        b.type_into("#max_tokens", "400")
        first = "Hello from the browser test"
        answer, lengths = self.send_and_watch(first)
        expected = self.api_answer([{"role": "user", "content": first}], 400)
        self.assertEqual(answer, expected)
        self.assertGreater(len(lengths - {0, len(answer)}), 0,
                           "no partial answer was ever shown: not streamed")
        self.assertEqual(b.js("document.getElementById('model').textContent"), MODEL_NAME)
        self.assertIn("tokens/s", b.js("document.getElementById('status').textContent"))

        second = "And a follow-up"
        b.type_into("#max_tokens", "20")
        answer2, _ = self.send_and_watch(second)
        expected2 = self.api_answer([{"role": "user", "content": first},
                                     {"role": "assistant", "content": answer},
                                     {"role": "user", "content": second}], 20)
        self.assertEqual(answer2, expected2)
        users = b.js("[...document.querySelectorAll('.msg.user')].map(e => e.textContent)")
        self.assertEqual(users, [first, second])


if __name__ == "__main__":
    unittest.main(verbosity=2)
