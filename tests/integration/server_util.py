"""server_util.py: starting and stopping `vkllm serve` for the integration tests.

A server is started on port 0 (any free port); its first stdout line
"vkllm serve: listening on http://HOST:PORT" gives the address. Environment:
VKLLM_BIN (the vkllm executable) and VKLLM_TEST_MODEL (a small GGUF, made by
tools/run_integration.sh with `vkllm synth`)."""
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

BIN = os.environ.get("VKLLM_BIN", "build/vkllm")
MODEL = os.environ.get("VKLLM_TEST_MODEL", "/tmp/vkllm-integration/tiny.gguf")
MODEL_NAME = "tiny"
# Engine flags every test server uses: a chat template for the synthetic model and a
# fixed KV pool, so runs do not depend on the device's memory.
ENGINE_FLAGS = ["--chat-template", "llama3", "--kv-blocks", "512"]


class Server:
    """A running `vkllm serve`; use as a context manager or call stop()."""

    def __init__(self, *extra, api_key=None, startup_timeout=120):
        cmd = [BIN, "serve", "-m", MODEL, "--port", "0", "--served-model-name", MODEL_NAME]
        cmd += ENGINE_FLAGS + list(extra)
        if api_key:
            cmd += ["--api-key", api_key]
        self.api_key = api_key
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.stderr_lines = []
        self._threads = [threading.Thread(target=self._drain_stderr, daemon=True)]
        self._threads[0].start()
        deadline = time.time() + startup_timeout
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line or self.proc.poll() is not None:
                break
        m = re.search(r"listening on (http://\S+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("server did not start: %r\n%s" % (line, "".join(self.stderr_lines)))
        self.url = m.group(1)
        self._threads.append(threading.Thread(target=self.proc.stdout.read, daemon=True))
        self._threads[-1].start()

    @classmethod
    def attach(cls, url, api_key=None):
        """A server started elsewhere (tools/run_integration.sh); stop() leaves it."""
        self = cls.__new__(cls)
        self.url, self.api_key, self.proc, self.stderr_lines = url.rstrip("/"), api_key, None, []
        return self

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def headers(self, extra=None):
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = "Bearer " + self.api_key
        h.update(extra or {})
        return h

    def request(self, method, path, body=None, headers=None, raw=None, timeout=60):
        """(status, headers, body bytes) of one request; never raises on HTTP errors."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers if headers is not None else self.headers())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def post(self, path, body, **kw):
        status, headers, data = self.request("POST", path, body, **kw)
        return status, headers, json.loads(data) if data else None

    def metrics(self):
        """{series: value} of GET /metrics."""
        status, _, data = self.request("GET", "/metrics")
        assert status == 200, status
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                out[series] = float(value)
        return out

    def metric(self, name, **labels):
        lab = {"model_name": MODEL_NAME, **labels}
        series = "vkllm:%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in lab.items()))
        return self.metrics()[series]

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Sends sig and returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        self.close_pipes()
        return self.proc.returncode

    def close_pipes(self):
        for t in self._threads:
            t.join(2)
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wait_until(predicate, timeout=20.0, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def shared_server():
    """The server named by $VKLLM_TEST_URL (and $VKLLM_TEST_KEY), else a new one."""
    url = os.environ.get("VKLLM_TEST_URL")
    if url:
        return Server.attach(url, os.environ.get("VKLLM_TEST_KEY") or None)
    return Server(api_key="test-key")
