#!/usr/bin/env python3
"""Mixed clients against server_epoll for a fixed time (tests/soak.sh).

    soak.py PORT CA_FILE WWW_DIR SECONDS THREADS

THREADS worker threads each run connections back to back until SECONDS
have passed, picking a kind in turn:
  full      TLS 1.2 or 1.3 full handshake, GET a file, sha256 checked
  resumed   the same with the session of an earlier connection (the
            server must resume most of them)
  slow      full handshake, the request one byte at a time, GET checked
  aborted   half a real ClientHello, then close
  garbage   random bytes: must get an alert or a close
  reset     handshake, GET the large file, read a little, TCP reset
  keyupdate openssl s_client (TLS 1.3) sends KeyUpdates (k, K: asking for
            the server's, k) before its GET of the text file, checked
Prints one line per kind: "kind N ok M fail" and the first failures, and
"total N"; exits non-zero if any good client failed or resumption never
happened.
"""
import hashlib
import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

port, ca, www, seconds, threads = (int(sys.argv[1]), sys.argv[2], sys.argv[3],
                                    float(sys.argv[4]), int(sys.argv[5]))
files = {f: hashlib.sha256(open(os.path.join(www, f), "rb").read()).hexdigest()
         for f in sorted(os.listdir(www))}
TEXT = open(os.path.join(www, "text"), "rb").read()
KINDS = ["full", "resumed", "full", "slow", "aborted", "garbage", "resumed", "reset",
         "keyupdate"]
lock = threading.Lock()
stats = {k: [0, 0] for k in KINDS}
failures = []
reused = [0]
LIMIT = 20


def ctx_for(version):
    c = ssl.create_default_context(cafile=ca)
    c.minimum_version = c.maximum_version = version
    return c


CTX = {12: ctx_for(ssl.TLSVersion.TLSv1_2), 13: ctx_for(ssl.TLSVersion.TLSv1_3)}


def hello():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = c.wrap_bio(i, o, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return o.read()


HELLO = hello()


def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=LIMIT)
    s.settimeout(LIMIT)
    return s


def get(s, name, slow=False):
    req = ("GET /%s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % name).encode()
    if slow:
        for b in req:
            s.sendall(bytes([b]))
            time.sleep(0.002)
    else:
        s.sendall(req)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("status %r" % head[:40])
    if hashlib.sha256(body).hexdigest() != files[name]:
        raise RuntimeError("body of %s differs (%d bytes)" % (name, len(body)))


def keyupdate():
    """s_client acts on one command per read of its stdin: the lines are paced."""
    p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                          "-servername", "localhost", "-CAfile", ca, "-tls1_3", "-crlf",
                          "-verify_return_error"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    timer = threading.Timer(LIMIT, p.kill)
    timer.start()
    try:
        # Each command once s_client has acted on the one before.
        seen = 0
        for line in (b"k\n", b"K\n", b"k\n"):
            p.stdin.write(line)
            p.stdin.flush()
            while True:
                got = p.stderr.readline()
                if not got or got == b"KEYUPDATE\n":
                    break
            seen += got == b"KEYUPDATE\n"
        p.stdin.write(b"GET /text HTTP/1.1\nHost: localhost\nConnection: close\n\n")
        p.stdin.flush()
        out = p.stdout.read()
        p.stderr.read()
        p.wait()
    finally:
        timer.cancel()
        p.stdin.close()
    if seen != 3:
        raise RuntimeError("s_client sent %d KeyUpdates" % seen)
    if TEXT not in out:
        raise RuntimeError("body of text differs after KeyUpdates (%d bytes out)" % len(out))


def run(kind, n, sessions):
    name = random.choice(list(files))
    if kind == "keyupdate":
        return keyupdate()
    v = 12 + (n // len(KINDS)) % 2
    if kind in ("full", "resumed", "slow"):
        sess = sessions.get(v) if kind == "resumed" else None
        with CTX[v].wrap_socket(connect(), server_hostname="localhost", session=sess) as s:
            get(s, name, slow=(kind == "slow"))
            if kind == "resumed" and s.session_reused:
                with lock:
                    reused[0] += 1
            sessions[v] = s.session
    elif kind == "aborted":
        s = connect()
        s.sendall(HELLO[: len(HELLO) // 2])
        s.close()
    elif kind == "garbage":
        s = connect()
        s.sendall(os.urandom(200))
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        s.close()
    elif kind == "reset":
        s = CTX[v].wrap_socket(connect(), server_hostname="localhost")
        big = max(files, key=lambda f: os.path.getsize(os.path.join(www, f)))
        s.sendall(("GET /%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % big).encode())
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def worker(w):
    end = time.monotonic() + seconds
    sessions = {}
    i = 0
    while time.monotonic() < end:
        # Each worker walks the kinds in turn, from its own offset.
        n = w + i * threads
        kind = KINDS[(w + i) % len(KINDS)]
        i += 1
        try:
            run(kind, n, sessions)
            ok = True
        except Exception as e:  # a good client failing is the finding
            ok = kind in ("aborted", "garbage", "reset")
            if not ok:
                with lock:
                    failures.append("%s #%d: %r" % (kind, n, e))
        with lock:
            stats[kind][0 if ok else 1] += 1


ts = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
total = 0
for k, (ok, bad) in stats.items():
    print("%-8s %d ok %d fail" % (k, ok, bad))
    total += ok + bad
print("resumed sessions: %d" % reused[0])
for f in failures[:10]:
    print("FAIL " + f)
print("total %d" % total)
sys.exit(1 if failures or reused[0] == 0 else 0)
