"""The one HTTP client every method is measured with.

One request = one new TCP connection, `GET <path> HTTP/1.1` with `Connection: close`, read to EOF,
parse the status line. No keep-alive, no pooling: every method pays the same connect cost.
Timing uses time.perf_counter_ns().

Services in a network namespace of their own (kiln's instances) are reached the way kiln reaches
them: the socket is created by a thread that has setns(2)'d into that namespace (a socket belongs
to the namespace it was created in), then used from the calling thread. Nothing else differs.
"""

import ctypes
import ctypes.util
import os
import queue
import socket
import threading
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

POLL_INTERVAL_S = 0.005  # readiness polling period, as `kiln bench startup` (5 ms)


class Endpoint:
    def __init__(self, port, host="127.0.0.1", netns=None):
        self.host, self.port, self.netns = host, port, netns

    def __repr__(self):
        where = f" in netns {self.netns}" if self.netns else ""
        return f"{self.host}:{self.port}{where}"


class _NetnsSocketFactory:
    """A thread living in one network namespace that creates sockets on request."""

    def __init__(self, path):
        self.path = path
        self.requests = queue.Queue()
        self.ready = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"netns:{os.path.basename(path)}", daemon=True)
        self.thread.start()
        error = self.ready.get()
        if error:
            raise OSError(error, f"setns({path}): {os.strerror(error)}")

    def _run(self):
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.ready.put(e.errno or 1)
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                self.ready.put(ctypes.get_errno() or 1)
                return
        finally:
            os.close(fd)
        self.ready.put(0)
        while True:
            reply = self.requests.get()
            if reply is None:
                return
            try:
                reply.put(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            except OSError as e:
                reply.put(e)

    def socket(self):
        reply = queue.Queue(maxsize=1)
        self.requests.put(reply)
        result = reply.get()
        if isinstance(result, Exception):
            raise result
        return result

    def close(self):
        self.requests.put(None)


_factories = {}
_factories_lock = threading.Lock()


def _new_socket(endpoint):
    if not endpoint.netns:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with _factories_lock:
        factory = _factories.get(endpoint.netns)
        if factory is None:
            factory = _NetnsSocketFactory(endpoint.netns)
            _factories[endpoint.netns] = factory
    return factory.socket()


def forget_netns(path):
    """Ends the helper thread of a namespace that is going away."""
    with _factories_lock:
        factory = _factories.pop(path, None)
    if factory:
        factory.close()


class Response:
    __slots__ = ("status", "body", "elapsed_ms")

    def __init__(self, status, body, elapsed_ms):
        self.status, self.body, self.elapsed_ms = status, body, elapsed_ms


def request(endpoint, path, timeout=5.0):
    """One GET; returns a Response (status 0 and the error text as body when no HTTP answer)."""
    start = time.perf_counter_ns()
    try:
        sock = _new_socket(endpoint)
    except OSError as e:
        return Response(0, f"socket: {e}", (time.perf_counter_ns() - start) / 1e6)
    try:
        sock.settimeout(timeout)
        sock.connect((endpoint.host, endpoint.port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {endpoint.host}:{endpoint.port}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
    except OSError as e:
        return Response(0, f"{type(e).__name__}: {e}", (time.perf_counter_ns() - start) / 1e6)
    finally:
        sock.close()
    elapsed = (time.perf_counter_ns() - start) / 1e6
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return Response(0, f"no HTTP status line in {data[:80]!r}", elapsed)
    return Response(status, body, elapsed)


class NotReady(Exception):
    def __init__(self, message, last):
        super().__init__(message)
        self.last = last


def wait_ready(endpoint_fn, path, start_ns, timeout_s=120.0, alive=lambda: True):
    """Polls GET path every 5 ms until it answers 200; returns ms from start_ns to that answer.

    endpoint_fn() returns the Endpoint, or None while it is not known yet (a netns that does not
    exist yet). alive() returning False (the process died) ends the wait early.
    """
    deadline = start_ns + int(timeout_s * 1e9)
    last = "never reached"
    attempts = 0
    while True:
        endpoint = endpoint_fn()
        if endpoint is not None:
            attempts += 1
            response = request(endpoint, path, timeout=2.0)
            if response.status == 200:
                return (time.perf_counter_ns() - start_ns) / 1e6, attempts
            last = f"HTTP {response.status}: {response.body[:200]!r}" if response.status else str(response.body)
        now = time.perf_counter_ns()
        if now > deadline:
            raise NotReady(f"no 200 from {path} within {timeout_s:.0f} s (last: {last})", last)
        if not alive():
            raise NotReady(f"the service exited before answering {path} (last: {last})", last)
        time.sleep(POLL_INTERVAL_S)


def timed_requests(endpoint, paths):
    """Sends the paths one after another; returns the latency of each (ms) and the statuses."""
    latencies, statuses = [], []
    for path in paths:
        response = request(endpoint, path, timeout=10.0)
        latencies.append(round(response.elapsed_ms, 3))
        statuses.append(response.status)
    return latencies, statuses
