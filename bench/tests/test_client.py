"""The measuring client against a local HTTP server (no root, no JVM)."""

import http.server
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kilnbench import client  # noqa: E402


class Handler(http.server.BaseHTTPRequestHandler):
    ready_at = 0.0

    def do_GET(self):  # noqa: N802
        if self.path == "/health" and time.time() < Handler.ready_at:
            self.send_response(503)
        else:
            self.send_response(200)
        body = b'{"status":"UP"}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ClientTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.port = cls.server.server_address[1]
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()

    def test_request_parses_status_and_body(self):
        response = client.request(client.Endpoint(self.port), "/owners/1")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b'{"status":"UP"}')
        self.assertGreater(response.elapsed_ms, 0)

    def test_refused_connection_is_status_zero(self):
        response = client.request(client.Endpoint(1), "/")
        self.assertEqual(response.status, 0)
        self.assertIn("Refused", response.body)

    def test_wait_ready_polls_until_200(self):
        Handler.ready_at = time.time() + 0.2
        start = time.perf_counter_ns()
        ms, attempts = client.wait_ready(lambda: client.Endpoint(self.port), "/health", start, timeout_s=5)
        self.assertGreaterEqual(ms, 150)
        self.assertGreater(attempts, 3)

    def test_wait_ready_gives_up_when_the_service_dies(self):
        start = time.perf_counter_ns()
        with self.assertRaises(client.NotReady):
            client.wait_ready(lambda: client.Endpoint(1), "/health", start, timeout_s=5, alive=lambda: False)

    def test_wait_ready_waits_for_an_endpoint_to_exist(self):
        Handler.ready_at = 0
        known = {"at": time.time() + 0.1}
        start = time.perf_counter_ns()
        ms, _ = client.wait_ready(lambda: client.Endpoint(self.port) if time.time() > known["at"] else None,
                                  "/health", start, timeout_s=5)
        self.assertGreaterEqual(ms, 90)

    def test_timed_requests(self):
        latencies, statuses = client.timed_requests(client.Endpoint(self.port), ["/a", "/b", "/c"])
        self.assertEqual(statuses, [200, 200, 200])
        self.assertEqual(len(latencies), 3)


if __name__ == "__main__":
    unittest.main()
