#!/usr/bin/env python3
"""Misbehaving clients for tests/load.sh, all at once, one thread each.

    load_bad.py PORT CA_FILE SERVER_TIMEOUT_MS COUNT_PER_KIND READY_FILE GO_FILE

Every client thread starts, then READY_FILE is created, and they all begin
once GO_FILE exists (the load test's start line).

Kinds:
  half-hello      half a real ClientHello, then close
  connect-close   connect, close at once
  plain-http      an HTTP request on the TLS port: must get an alert record
  garbage         random bytes: must get an alert or a close
  stall-hello     half a ClientHello, then silence: the server must close
                  by its timeout (and not much earlier)
  stall-request   a full handshake, half a request, then silence: likewise
  reset           a full handshake, GET a large file, read a little, then
                  close with a TCP reset in the middle of the response

Prints "ok   KIND N: detail" or "FAIL KIND N: detail" per client and exits
non-zero if any failed. Nothing waits longer than the server timeout + 5 s.
"""
import os
import socket
import ssl
import struct
import sys
import threading
import time

port, ca, timeout_ms, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ready_file, go_file = sys.argv[5], sys.argv[6]
go = threading.Event()
limit = timeout_ms / 1000 + 5
results, lock = [], threading.Lock()


def client_hello():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


HELLO = client_hello()


def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=limit)
    s.settimeout(limit)
    return s


def read_until_close(s):
    """All bytes until the server closes (b'' also for a reset)."""
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


def expect_alert_or_close(s, need_alert):
    t0 = time.monotonic()
    try:
        data = read_until_close(s)
    except socket.timeout:
        return False, "no close after %.1f s (hang)" % (time.monotonic() - t0)
    if data[:1] == b"\x15":
        return True, "alert record %s" % data[:7].hex()
    if need_alert:
        return False, "no alert, got %r" % data[:16]
    return data == b"", "closed" if not data else "unexpected bytes %r" % data[:16]


def half_hello(i):
    s = connect()
    s.sendall(HELLO[: len(HELLO) // 2])
    s.close()
    return True, "sent %d of %d bytes" % (len(HELLO) // 2, len(HELLO))


def connect_close(i):
    connect().close()
    return True, "closed"


def plain_http(i):
    s = connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return expect_alert_or_close(s, need_alert=True)


def garbage(i):
    s = connect()
    junk = bytearray(os.urandom(300 + 97 * i))
    junk[0] = 0x20 + junk[0] % 0x5F  # printable: never a TLS record type
    s.sendall(bytes(junk))
    return expect_alert_or_close(s, need_alert=False)


def closed_by_timeout(s, what):
    t0 = time.monotonic()
    try:
        read_until_close(s)
    except (socket.timeout, TimeoutError):
        return False, "%s: server did not close within %.1f s" % (what, limit)
    except ssl.SSLError as e:  # a close without close_notify, after a timeout
        if "EOF" not in str(e):
            return False, "%s: %s" % (what, e)
    took = time.monotonic() - t0
    ok = took >= timeout_ms / 1000 * 0.5
    return ok, "%s: closed by the server after %.1f s (timeout %d ms)" % (what, took, timeout_ms)


def stall_hello(i):
    s = connect()
    s.sendall(HELLO[: len(HELLO) // 2])
    return closed_by_timeout(s, "mid-handshake")


def tls():
    ctx = ssl.create_default_context(cafile=ca)
    return ctx.wrap_socket(connect(), server_hostname="localhost")


def stall_request(i):
    s = tls()
    s.sendall(b"GET /f1 HTTP/1.1\r\nHost: localhost\r\n")
    return closed_by_timeout(s, "mid-request")


def reset(i):
    s = tls()
    s.sendall(b"GET /f3 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = s.recv(1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return got.startswith(b"HTTP/1.1 200"), "read %d bytes, then reset" % len(got)


def run(kind, fn, i):
    go.wait()
    try:
        ok, detail = fn(i)
    except Exception as e:  # a failure of this client, reported, not fatal
        ok, detail = False, "%s: %s" % (type(e).__name__, e)
    with lock:
        results.append((ok, kind, i, detail))


kinds = [half_hello, connect_close, plain_http, garbage, stall_hello, stall_request, reset]
threads = [threading.Thread(target=run, args=(k.__name__.replace("_", "-"), k, i))
           for k in kinds for i in range(count)]
for t in threads:
    t.start()
open(ready_file, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go_file) and time.monotonic() < deadline:
    time.sleep(0.01)
go.set()
for t in threads:
    t.join()
for ok, kind, i, detail in sorted(results, key=lambda r: (r[1], r[2])):
    print("%s %s %d: %s" % ("ok  " if ok else "FAIL", kind, i, detail))
sys.exit(0 if all(r[0] for r in results) else 1)
