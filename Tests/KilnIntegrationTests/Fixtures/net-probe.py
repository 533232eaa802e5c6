#!/usr/bin/python3
"""TCP probe for kiln's network tests.

  net-probe.py serve PORT               accept connections on [::]:PORT (IPv4 too), answer "peer=<address>"
  net-probe.py connect HOST PORT SECS   connect; print "ok <answer>" (exit 0), "refused" (3),
                                        "timeout" (4) or "error <text>" (5)
  net-probe.py udp-listen PORT SECS     print "got <text> from <address>" for the first datagram
                                        on 0.0.0.0:PORT within SECS, or "nothing"
  net-probe.py udp-send HOST PORT TEXT  send TEXT three times (broadcast allowed)
"""
import socket
import sys


def serve(port):
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", port))
    server.listen(16)
    while True:
        conn, peer = server.accept()
        try:
            address = peer[0][7:] if peer[0].startswith("::ffff:") else peer[0]
            conn.sendall(("peer=%s\n" % address).encode())
        finally:
            conn.close()


def connect(host, port, seconds):
    try:
        conn = socket.create_connection((host, port), timeout=seconds)
        answer = conn.recv(200).decode().strip()
        conn.close()
    except ConnectionRefusedError:
        print("refused")
        return 3
    except (socket.timeout, TimeoutError):
        print("timeout")
        return 4
    except OSError as error:
        print("error %s" % error)
        return 5
    print("ok %s" % answer)
    return 0


def udp_listen(port, seconds):
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.settimeout(seconds)
    try:
        data, peer = server.recvfrom(200)
        print("got %s from %s" % (data.decode(), peer[0]))
    except (socket.timeout, TimeoutError):
        print("nothing")
    return 0


def udp_send(host, port, text):
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    for _ in range(3):
        client.sendto(text.encode(), (host, port))
    print("sent")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "udp-listen":
        sys.exit(udp_listen(int(sys.argv[2]), float(sys.argv[3])))
    elif sys.argv[1] == "udp-send":
        sys.exit(udp_send(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    else:
        sys.exit(connect(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
