#!/usr/bin/env python3
"""rktls vs OpenSSL vs rustls-ffi, side by side (issue #14). Run by
scripts/bench.sh (make bench, make bench-quick), which builds everything
first. Python standard library only.

  bench.py --out FILE.md [--quick]

Systems (servers, pinned to CPU 0; the load client bench/loadclient.c on CPU 1):
  rktls       examples-c/server_epoll --quiet --ktls off (the acceptor path)
  openssl     Debian's `openssl s_server -WWW -quiet`
  rustls-ffi  rustls-ffi's tests/server.c, patched by bench/rustls-ffi-patch.py
  nginx-openssl  Debian's nginx, `listen ... ssl` (its OpenSSL 3)
  nginx-rktls    the same nginx with ngx_http_rktls_module, `rktls on` (issue #17)
The nginx systems run as one process (`daemon off; master_process off;`, so
the pinned, measured process is the one that accepts and serves), with
configs written by bench/nginx_conf.sh (tests/nginx_lib.sh's nginx_conf).
Each repetition runs the systems in turn (A B C A B C ...); figures are
median [min-max] over the repetitions. Instruction counts (callgrind) and
syscall counts (strace -c -f) are differences between runs of N and 4N
connections, so start-up and shutdown cancel (callgrind: both runs on one
server after a warm-up run, each between two dumps).
"""
import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BB = os.path.join(ROOT, "build", "bench")
EX = os.path.join(ROOT, "build", "examples")
CERTS = os.path.join(ROOT, "build", "certs")
CLIENT = os.path.join(BB, "loadclient")
TICK = os.sysconf("SC_CLK_TCK")
SYSTEMS = ["rktls", "openssl", "rustls-ffi", "nginx-openssl", "nginx-rktls"]
# rktls's server prefers TLS_AES_128_GCM_SHA256 (its default suite order);
# OpenSSL's client lists AES-256 first, which s_server and rustls-ffi follow.
# These rows take the suite choice out: the client offers one suite only.
SAME_SUITE_KINDS = [("full", "ecdsa@AES-256-GCM"), ("resume", "ecdsa@AES-256-GCM"),
                    ("full", "ecdsa@AES-128-GCM"), ("resume", "ecdsa@AES-128-GCM")]
SAME_SUITE_SYSTEMS = ["rktls", "rustls-ffi"]
HOLD_SYSTEMS = ["rktls", "openssl", "rustls-ffi"]  # bench/hold.c: libraries, not servers
NGINX = "/usr/sbin/nginx"
NGINX_MODULE = os.path.join(ROOT, "build", "nginx", "ngx_http_rktls_module.so")
NGINX_ARGS = "daemon off; master_process off;"
SCRATCH = None  # the run's scratch directory (main); nginx configs go under it
KEYS = {"ecdsa": ("server.pem", "server.key"), "rsa": ("rsa.pem", "rsa.key")}
SUITES = {"AES-128-GCM": "TLS_AES_128_GCM_SHA256", "AES-256-GCM": "TLS_AES_256_GCM_SHA384"}
SMALL = 100  # bytes of the response body in handshake runs


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(hard, 8192), 65536) if hard != resource.RLIM_INFINITY else 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---- processes ------------------------------------------------------------------

def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def listening_port(pid):
    """The TCP port a process (or a descendant) listens on, or None."""
    inodes = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children(p)
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    link = os.readlink(f"/proc/{p}/fd/{fd}")
                except OSError:
                    continue
                m = re.match(r"socket:\[(\d+)\]", link)
                if m:
                    inodes.add(m.group(1))
        except OSError:
            pass
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:
                return int(parts[1].split(":")[1], 16)
    return None


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_body(system, port, cert, key, www, ktls="off", extra=""):
    """The inside of http {} for one nginx system: one server on PORT."""
    if system == "nginx-rktls":
        tls = (f"listen 127.0.0.1:{port}; rktls on; rktls_certificate {cert}; "
               f"rktls_certificate_key {key}; rktls_ktls {ktls};")
    else:
        # nginx 1.22's default ssl_protocols lack TLSv1.3
        tls = (f"listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; "
               "ssl_protocols TLSv1.2 TLSv1.3;")
    return (f"    sendfile on;\n    server {{ {tls} server_name localhost; access_log off; "
            f"root {www}; {extra} }}")


def nginx_conf(tdir, body, level="warn"):
    """Writes TDIR/nginx.conf with bench/nginx_conf.sh; returns the command line
    (without taskset/tool) that runs it as one foreground process."""
    conf = os.path.join(tdir, "nginx.conf")
    env = dict(os.environ, NGINX_LOG_LEVEL=level, MODULE=NGINX_MODULE)
    subprocess.run([os.path.join(ROOT, "bench", "nginx_conf.sh"), tdir, conf, body],
                   check=True, env=env, cwd=ROOT)
    d = os.path.join(tdir, "nginx")
    return [NGINX, "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf, "-g", NGINX_ARGS]


def connections_on(port):
    """TCP connections on local port PORT that the server still has to work
    on: established, or closed by the client (CLOSE_WAIT), or ours with the
    FIN not yet acknowledged (FIN_WAIT1, CLOSING, LAST_ACK). Not TIME_WAIT."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and parts[3] in ("01", "04", "08", "09", "0B"):
                n += 1
    return n


def cpu_seconds(pid):
    """On-CPU time of a process, all threads: the kernel's sum_exec_runtime
    (/proc/PID/task/*/schedstat, ns), of which utime+stime in /proc/PID/stat
    are the 10 ms-tick split."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


class Server:
    """A server under test, pinned to CPU 0, optionally under a tool
    ("callgrind" or "strace"); .port once it is ready."""

    def __init__(self, system, www, key="ecdsa", body=SMALL, tool=None, outfile=None,
                 naccept=None, ktls="off"):
        cert, keyf = (os.path.join(CERTS, x) for x in KEYS[key.split("@")[0]])
        env = dict(os.environ)
        cwd = www
        if system == "rktls":
            cmd = [os.path.join(EX, "server_epoll"), "--cert", cert, "--key", keyf, "--root", www,
                   "--ktls", ktls, "--quiet"]
        elif system == "openssl":
            cmd = ["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", keyf,
                   "-WWW", "-quiet"]
            if naccept:
                cmd += ["-naccept", str(naccept)]
        elif system.startswith("nginx-"):
            self.nginx_port = free_port()
            tdir = os.path.join(SCRATCH, system)
            cmd = nginx_conf(tdir, nginx_body(system, self.nginx_port, cert, keyf, www, ktls))
        else:
            cmd = [os.path.join(BB, "rustls-ffi-server"), cert, keyf]
            env.update(PORT="0", BODY_BYTES=str(body), VECTORED_IO="1")
        self.system = system
        if tool == "callgrind":  # instrumented from readiness on (see start_counting)
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={outfile}"] + cmd
        elif tool == "strace":
            cmd = ["strace", "-f", "-c", "-o", outfile] + cmd
        self.tool = tool
        self.log = tempfile.TemporaryFile()
        quiet = system == "openssl" or system.startswith("nginx-")
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + cmd, cwd=cwd, env=env,
                                     stdout=subprocess.PIPE if not quiet else self.log,
                                     stderr=self.log)
        self.port = None
        deadline = time.time() + 60
        if system.startswith("nginx-"):  # ready once its socket listens
            while self.port is None:
                self._check(deadline)
                if listening_port(self.proc.pid) == self.nginx_port:
                    self.port = self.nginx_port
                time.sleep(0.02)
        elif system == "openssl":
            while self.port is None:
                self._check(deadline)
                self.port = listening_port(self.proc.pid)
                time.sleep(0.02)
        else:
            line = self.proc.stdout.readline().decode()
            m = re.match(r"READY port=(\d+)", line)
            if not m:
                self._check(0)
            self.port = int(m.group(1))
        if tool == "callgrind":
            self.start_counting()

    def start_counting(self):
        """Under callgrind: instrument from now on. Start-up (aws-lc's entropy
        seeding, config and key loading) then runs uninstrumented and fast; it
        would cancel out of the N vs 4N difference anyway."""
        r = subprocess.run(["callgrind_control", "-i", "on", str(self.proc.pid)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"callgrind_control: {r.stdout} {r.stderr}")

    def _check(self, deadline):
        if self.proc.poll() is not None or time.time() > deadline:
            self.log.seek(0)
            raise RuntimeError(f"{self.system} server did not start: {self.log.read()[-2000:]!r}")

    def pid(self):
        """The server program's pid (under strace: strace's child)."""
        if self.tool == "strace":
            for _ in range(100):
                kids = children(self.proc.pid)
                if kids:
                    return kids[0]
                time.sleep(0.01)
        return self.proc.pid

    def settle(self):
        """Waits (at most 5 s) until the server has finished with every
        connection (its close, close_notify, lingering close)."""
        end = time.time() + 5
        while self.port and connections_on(self.port) and time.time() < end:
            time.sleep(0.01)

    def stop(self, wait_exit=False):
        if self.system.startswith("nginx-"):
            # so that N and 4N runs end alike
            self.settle()
        if wait_exit:  # s_server -naccept: it ends by itself
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            try:
                os.kill(self.pid(), 15)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def client(args, check_resumed=None):
    out = subprocess.run(["taskset", "-c", "1", CLIENT] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"loadclient {args}: {out.stderr.strip()}")
    m = dict(re.findall(r"(\w+)=(\S+)", out.stdout))
    if check_resumed is not None and int(m["resumed"]) != check_resumed:
        raise RuntimeError(f"loadclient {args}: resumed {m['resumed']}, expected {check_resumed}")
    return m


def hs_client(mode, port, n, key="ecdsa"):
    """A key "K@SUITE" (e.g. "ecdsa@AES-256-GCM") has the client offer that
    one TLS 1.3 suite, so every server negotiates the same one."""
    suite = ["--suite", SUITES[key.split("@")[1]]] if "@" in key else []
    return client([mode, port, n, "--path", "/small"] + suite,
                  check_resumed=n if mode == "resume" else 0)


# ---- the figures ----------------------------------------------------------------

def handshake_cpu(system, www, mode, key, n, warm):
    s = Server(system, www, key)
    try:
        hs_client(mode, s.port, warm, key)
        c0 = cpu_seconds(s.pid())
        hs_client(mode, s.port, n, key)
        c1 = cpu_seconds(s.pid())
    finally:
        s.stop()
    return (c1 - c0) / n * 1e6


def tool_count(system, www, mode, key, n, tool, tmp):
    """Total syscalls (strace) of a server run of n connections."""
    out = os.path.join(tmp, f"{tool}-{system}-{mode}-{key}-{n}.out")
    conns = n + (1 if mode == "resume" else 0)
    s = Server(system, www, key, tool=tool, outfile=out,
               naccept=conns if system == "openssl" else None)
    try:
        hs_client(mode, s.port, n, key)
    finally:
        s.stop(wait_exit=system == "openssl")
    with open(out) as f:
        text = f.read()
    m = re.search(r"^100\.00\s+\S+\s+\S+\s+(\d+)\s+(?:\d+\s+)?total$", text, re.M)
    return int(m.group(1)), out


def callgrind_totals(path):
    with open(path) as f:
        text = f.read()
    m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    return int(m.group(1))


def callgrind_diff(system, www, mode, key, n, tmp):
    """Instructions per connection under callgrind, from one server: after a
    warm-up run of N connections (first-use initialisation), a run of N and a
    run of 4N, each between two `callgrind_control --dump`s (a dump also
    zeroes the counters), so start-up and shutdown are in neither;
    (Ir(4N) - Ir(N)) / 3N then also cancels what a run costs once (resume:
    its first, full handshake)."""
    out = os.path.join(tmp, f"callgrind-{system}-{mode}-{key}.out")
    # no s_server -naccept: it would exit at the last connection, racing
    # the last dump; every server is stopped with SIGTERM after it
    s = Server(system, www, key, tool="callgrind", outfile=out)

    def dump():
        s.settle()
        r = subprocess.run(["callgrind_control", "--dump", str(s.proc.pid)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"callgrind_control --dump: {r.stdout} {r.stderr}")
    try:
        hs_client(mode, s.port, n, key)  # warm-up
        dump()
        hs_client(mode, s.port, n, key)
        dump()
        hs_client(mode, s.port, 4 * n, key)
        dump()
    finally:
        s.stop()
    a, b = callgrind_totals(f"{out}.2"), callgrind_totals(f"{out}.3")
    return (b - a) / (3 * n), f"{out}.3"


def per_conn_diff(system, www, mode, key, n, tool, tmp):
    if tool == "callgrind":
        return callgrind_diff(system, www, mode, key, n, tmp)
    a, _ = tool_count(system, www, mode, key, n, tool, tmp)
    b, out = tool_count(system, www, mode, key, 4 * n, tool, tmp)
    return (b - a) / (3 * n), out


def bulk(system, www, size, suite):
    s = Server(system, www, body=size)
    try:
        c0 = cpu_seconds(s.pid())
        m = client(["bulk", s.port, 1, "--path", "/big", "--expect", size, "--suite", SUITES[suite]])
        c1 = cpu_seconds(s.pid())
    finally:
        s.stop()
    cpu = c1 - c0
    return {"cpu_s_per_gb": cpu / (size / 1e9), "mb_s": size / float(m["secs"]) / 1e6}


def hold(system, warm, n):
    cert, key = (os.path.join(CERTS, x) for x in KEYS["ecdsa"])
    srv = subprocess.Popen(["taskset", "-c", "0", os.path.join(BB, f"hold-{system}"), cert, key,
                            str(warm), str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    port = int(re.match(r"READY port=(\d+)", srv.stdout.readline()).group(1))
    cl = subprocess.Popen(["taskset", "-c", "1", CLIENT, "hold", str(port), str(warm + n)],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        out, err = srv.communicate(timeout=600)
    finally:
        cl.stdin.close()
        cl.wait(timeout=60)
    m = re.search(r"per_conn=(-?\d+)", out)
    if srv.returncode != 0 or not m:
        raise RuntimeError(f"hold-{system}: {err}")
    return int(m.group(1))


def crypto_bound(seconds):
    """openssl speed on CPU 0: seconds per ECDSA P-256 sign, RSA-2048 sign,
    X25519 derive; AES-GCM GB/s (16 KiB blocks)."""
    def speed(args):
        out = subprocess.run(["taskset", "-c", "0", "openssl", "speed", "-seconds", str(seconds)] + args,
                             capture_output=True, text=True).stdout
        return out
    out = speed(["ecdsap256", "rsa2048", "ecdhx25519"])
    ecdsa = float(re.search(r"256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)", out).group(1))
    rsa = float(re.search(r"rsa 2048 bits\s+\S+s\s+\S+s\s+([\d.]+)", out).group(1))
    x25519 = float(re.search(r"253 bits ecdh \(X25519\)\s+\S+s\s+([\d.]+)", out).group(1))
    res = {"ecdsa_sign_us": 1e6 / ecdsa, "rsa_sign_us": 1e6 / rsa, "x25519_us": 1e6 / x25519}
    for name, evp in (("AES-128-GCM", "aes-128-gcm"), ("AES-256-GCM", "aes-256-gcm")):
        out = speed(["-evp", evp, "-bytes", "16384"])
        m = re.search(rf"^{evp}\s+([\d.]+)k", out, re.M | re.I)
        res[f"{name}_gb_s"] = float(m.group(1)) * 1000 / 1e9
    return res


def vm_figures(quick):
    """kTLS bulk and memory after offload, in the test VM (bench/vm_guest.sh)."""
    p = {"reps": 1 if quick else 3, "mib": 32 if quick else 128, "warm": 10 if quick else 100,
         "n": 100 if quick else 1000}
    guest = os.path.join(BB, "vm_guest.sh")
    # The guest's nginx configs, written here (bench/nginx_conf.sh) for the
    # guest's paths; the VM gets the directory at the same path. Inside the
    # throwaway VM nothing else listens: a fixed port.
    ngx, ngx_port, vwww = os.path.join(BB, "vm-nginx"), 8443, "/tmp/benchwww"
    shutil.rmtree(ngx, ignore_errors=True)
    cert, key = (os.path.join(CERTS, x) for x in KEYS["ecdsa"])
    for name, system, ktls, extra in (("nginx-rktls-ktls", "nginx-rktls", "require", ""),
                                      ("nginx-openssl", "nginx-openssl", "off", ""),
                                      ("nginx-openssl-ktls", "nginx-openssl", "off",
                                       "ssl_conf_command Options KTLS;")):
        nginx_conf(os.path.join(ngx, name), nginx_body(system, ngx_port, cert, key, vwww, ktls, extra))
    with open(os.path.join(ROOT, "bench", "vm_guest.sh")) as src, open(guest, "w") as dst:
        dst.write(f"REPS={p['reps']} MIB={p['mib']} WARM={p['warm']} N={p['n']} "
                  f"NGX={ngx} NGXPORT={ngx_port}\n" + src.read())
    files = [EX, CLIENT, os.path.join(BB, "hold-rktls"), os.path.join(BB, "mem_probe"), guest, CERTS,
             shutil.which("openssl"), "/usr/lib/ssl", "/etc/ssl/openssl.cnf",
             NGINX, NGINX_MODULE, "/etc/nginx/mime.types", ngx]
    env = dict(os.environ, VM_TIMEOUT="1200")
    out = subprocess.run([os.path.join(ROOT, "tests", "vm", "run.sh"), guest] + files,
                         capture_output=True, text=True, env=env)
    lines = [l for l in out.stdout.splitlines() if l.startswith("BENCHVM ")]
    if out.returncode != 0:
        raise RuntimeError("VM run failed: " + out.stdout[-3000:] + out.stderr[-2000:])
    res = {"bulk": {}, "mem": {}, "params": p,
           "heap": [l[len("BENCHVM heap "):] for l in lines if l.startswith("BENCHVM heap ")]}
    for l in lines:
        kv = dict(re.findall(r"(\w+)=(\S+)", l))
        if l.startswith("BENCHVM bulk"):
            gb = int(kv["bytes"]) / 1e9
            res["bulk"].setdefault(kv["sys"], []).append(
                {"user": max(int(kv["utime"]), 0) / TICK / gb, "sys": max(int(kv["stime"]), 0) / TICK / gb,
                 "offloaded": int(kv.get("txsw", 0))})
        elif l.startswith("BENCHVM hold"):
            res["mem"].setdefault(kv["sys"], []).append(
                {"per_conn": int(kv["per_conn"]), "offloaded": int(kv["offloaded"])})
    return res


# ---- statistics, report -----------------------------------------------------------

def mmm(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"med": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(s, digits=0):
    if s is None:
        return "—"
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{s['med']:,.{digits}f}"
    return f"{s['med']:,.{digits}f} [{s['min']:,.{digits}f}–{s['max']:,.{digits}f}]"


def ratio(a, b):
    return None if a is None or b is None or b["med"] == 0 else a["med"] / b["med"]


def r2(x):
    return "—" if x is None else f"{x:.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--no-vm", action="store_true")
    ap.add_argument("--from-json", help="only rewrite the report from a results file")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            R = json.load(f)
        missing = report(R, a.out, R["params"].get("quick", False))
        sys.exit(1 if missing else 0)
    raise_nofile()
    q = a.quick
    P = dict(quick=q, reps=1 if q else 3, n_cpu=30 if q else 2000, warm=5 if q else 50,
             n_tool=3 if q else 40, n_strace=5 if q else 100,
             bulk_bytes=(8 if q else 512) * 2**20, hold_warm=10 if q else 100,
             hold_n=100 if q else 1000)
    t_start = time.time()
    tmp = tempfile.mkdtemp(prefix="rktls-bench.")
    global SCRATCH
    SCRATCH = tmp
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(b"x" * SMALL)
    with open(os.path.join(www, "big"), "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(P["bulk_bytes"] >> 20):
            f.write(chunk)
    kinds = [("full", "ecdsa"), ("full", "rsa"), ("resume", "ecdsa")]
    R = {"params": P, "cpu": {}, "instr": {}, "sys": {}, "bulk": {}, "mem": {}}

    log("handshakes: server CPU (alternating systems)")
    for rep in range(P["reps"]):
        for mode, key in kinds:
            for s in SYSTEMS:
                R["cpu"].setdefault(f"{s}/{mode}/{key}", []).append(
                    handshake_cpu(s, www, mode, key, P["n_cpu"], P["warm"]))
    log("handshakes: syscalls (strace -c -f, N and 4N)")
    for rep in range(P["reps"]):
        for mode, key in kinds:
            for s in SYSTEMS:
                v, _ = per_conn_diff(s, www, mode, key, P["n_strace"], "strace", tmp)
                R["sys"].setdefault(f"{s}/{mode}/{key}", []).append(v)
    log("handshakes: instructions (callgrind, N and 4N)")
    keep = os.path.join(BB, "callgrind")
    os.makedirs(keep, exist_ok=True)
    for mode, key in kinds:
        for s in SYSTEMS:
            v, out = per_conn_diff(s, www, mode, key, P["n_tool"], "callgrind", tmp)
            R["instr"].setdefault(f"{s}/{mode}/{key}", []).append(v)
            shutil.copy(out, os.path.join(keep, f"{s}-{mode}-{key}.callgrind"))
    log("handshakes: instructions with one suite for every server (callgrind)")
    for mode, key in SAME_SUITE_KINDS:
        for s in SAME_SUITE_SYSTEMS:
            v, _ = per_conn_diff(s, www, mode, key, P["n_tool"], "callgrind", tmp)
            R["instr"].setdefault(f"{s}/{mode}/{key}", []).append(v)
    log("bulk download (userspace)")
    for rep in range(P["reps"]):
        for suite in SUITES:
            for s in SYSTEMS:
                R["bulk"].setdefault(f"{s}/{suite}", []).append(bulk(s, www, P["bulk_bytes"], suite))
    log("memory per idle connection")
    for rep in range(P["reps"]):
        for s in HOLD_SYSTEMS:
            R["mem"].setdefault(s, []).append(hold(s, P["hold_warm"], P["hold_n"]))
    log("crypto bound (openssl speed)")
    R["bound"] = crypto_bound(1 if q else 2)
    if not a.no_vm:
        log("kTLS in the test VM")
        R["vm"] = vm_figures(q)
    R["seconds"] = time.time() - t_start
    R["date"] = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    R["versions"] = cmd_versions()
    R["earlier"] = EARLIER
    shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(R, f, indent=1)
    missing = report(R, a.out, q)
    log(f"done in {R['seconds']:.0f} s; wrote {a.out}")
    if missing:
        print("MISSING FIGURES: " + ", ".join(missing))
        sys.exit(1)


def cmd_versions():
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    v = {}
    v["rktls"] = "rktls " + re.search(r'^version = "(.*)"', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M).group(1)
    v["rktls"] += f" (git {first(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'])})"
    lock = open(os.path.join(ROOT, "Cargo.lock")).read()
    for crate in ("rustls", "aws-lc-rs"):
        m = re.search(rf'name = "{crate}"\nversion = "(.*)"', lock)
        v[crate] = m.group(1) if m else "?"
    v["openssl"] = first(["openssl", "version"])
    try:
        v["rustls-ffi"] = open(os.path.join(BB, "rustls-ffi.version")).read().strip()
    except OSError:
        v["rustls-ffi"] = "?"
    v["kernel"] = platform.release()
    v["cpu"] = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    v["cores"] = os.cpu_count()
    v["cc"] = first(["cc", "--version"])
    v["valgrind"] = first(["valgrind", "--version"])
    v["strace"] = first(["strace", "-V"])
    try:
        v["nginx"] = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    except OSError:
        v["nginx"] = "?"
    return v


TARGETS = []  # (label, value, target) filled by report()


def report(R, out, quick):
    P = R["params"]
    S = {k: {kk: mmm(vv) for kk, vv in R[k].items()} for k in ("cpu", "instr", "sys", "mem")}
    bulk = {k: {f: mmm([x[f] for x in v]) for f in ("cpu_s_per_gb", "mb_s")} for k, v in R["bulk"].items()}
    b = R["bound"]
    bound_us = {"full/ecdsa": b["ecdsa_sign_us"] + 2 * b["x25519_us"],
                "full/rsa": b["rsa_sign_us"] + 2 * b["x25519_us"],
                "resume/ecdsa": 2 * b["x25519_us"]}
    missing = []

    def need(name, v):
        if v is None:
            missing.append(name)
        return v

    L = []
    w = L.append
    v = R.get("versions") or cmd_versions()
    w("# rktls benchmarks: rktls vs OpenSSL vs rustls-ffi, and nginx on rktls vs nginx on OpenSSL\n")
    w(f"Generated by `make bench{'-quick' if quick else ''}` (bench/bench.py) on "
      f"{R.get('date', '?')}, in {R['seconds']:.0f} s."
      + (" **Quick run: small counts, figures prove the harness only.**" if quick else "") + "\n")
    w("## Machine and versions\n")
    w(f"- machine: {v['cores']} cores ({v['cpu']}), Linux {v['kernel']} (a KVM guest shared with other jobs)")
    w(f"- {v['rktls']} on rustls {v['rustls']}, aws-lc-rs {v['aws-lc-rs']}")
    w(f"- {v['rustls-ffi']} (from the crates.io source, built with rktls's release profile)")
    w(f"- {v['openssl']} (Debian); load client: bench/loadclient.c on that libssl")
    w(f"- {v.get('nginx', '?')} (Debian 12's package) with build/nginx/ngx_http_rktls_module.so")
    w(f"- {v['cc']}; {v['valgrind']}; {v['strace']}\n")
    w("**Noise.** The 2 cores are shared with other jobs: server CPU times (from "
      "utime+stime, read as the kernel's exact sum `/proc/PID/task/*/schedstat`) move by tens of "
      "percent between runs. "
      "Instruction counts (callgrind) and syscall counts (strace) do not depend on that noise: "
      "read the ratios of those first.\n")
    w("## What is measured, exactly\n")
    w(f"- Every system serves HTTP/1.1 over TLS 1.3 on 127.0.0.1, server pinned to CPU 0 "
      f"(`taskset -c 0`), client pinned to CPU 1. Per repetition the systems run in turn "
      f"(A B C A B C …), {P['reps']} repetition(s); figures are median [min–max].")
    w("- Client (every system): `loadclient full|resume PORT N --path /small`: N sequential "
      "connections, TLS 1.3 only, X25519 only, no certificate verification, "
      f"`GET /small` ({SMALL}-byte body, `Connection: close`), response read to its end; "
      "`resume` first makes one full handshake for a ticket, then resumes each connection with the "
      "newest ticket, and the run fails unless every one of the N was resumed. The suite "
      "negotiated is TLS_AES_256_GCM_SHA384 for every server (the client's first choice, and "
      "OpenSSL's own first; rktls and rustls-ffi follow the client's order).")
    w("- rktls: `build/examples/server_epoll --cert C --key K --root WWW --ktls off --quiet` "
      "(the acceptor path: ClientHello → SNI → config; `--quiet`: no per-connection log line; "
      "`--ktls off` because this host kernel has no kTLS).")
    w("- OpenSSL: `openssl s_server -accept 127.0.0.1:0 -cert C -key K -WWW -quiet` in WWW "
      "(`-naccept` under callgrind/strace so it ends by itself). Readiness: its listening "
      "socket in /proc (it prints no port when quiet).")
    w("- rustls-ffi: `PORT=0 BODY_BYTES=B VECTORED_IO=1 rustls-ffi-server C K`, built by "
      "bench/rustls-ffi.sh from the published crate (tests/server.c + tests/common.c against "
      "its static library). Changes, made by bench/rustls-ffi-patch.py at build time: (1) port "
      "from `PORT` and a `READY port=N` line; (2) with `-DBENCH_QUIET` its LOG macro prints "
      "nothing and the per-connection rustls log callback is not installed; (3) the body is "
      "`BODY_BYTES` bytes of 'a' given to rustls in 64 KiB pieces as it accepts them (was: a "
      "10,000-byte body written at once, plus a stray newline). `VECTORED_IO=1` is its own "
      "switch (one writev per flight). It closes without close_notify after the response.")
    w("- nginx-openssl and nginx-rktls: Debian's `/usr/sbin/nginx` run as **one process** "
      f"(`-g '{NGINX_ARGS}'`: no master, no workers; so the process pinned to CPU 0 and measured "
      "is the one that accepts, handshakes and serves), config written by bench/nginx_conf.sh "
      "(tests/nginx_lib.sh's `nginx_conf`: the rktls module is loaded in both, error log at "
      "`warn`, `access_log off`, `sendfile on`, root WWW, one `server` on 127.0.0.1:PORT). "
      "nginx-openssl: `listen ... ssl; ssl_certificate C; ssl_certificate_key K; "
      "ssl_protocols TLSv1.2 TLSv1.3;` (nginx 1.22's default lacks TLSv1.3), otherwise "
      "nginx's defaults (tickets on, no session cache; it sends OpenSSL's two TLS 1.3 tickets). "
      "nginx-rktls: `listen ...; rktls on; rktls_certificate C; rktls_certificate_key K; "
      "rktls_ktls off;` (tickets on by default). Readiness: the listening socket in /proc; "
      "stopped with SIGTERM once no connection to its port is left. Same load client, same files.")
    w(f"- Server CPU: utime+stime of the server process (sum_exec_runtime from /proc/PID/task/*/schedstat) over N={P['n_cpu']} connections "
      f"after {P['warm']} warm-up connections. Instructions: `valgrind --tool=callgrind "
      f"--instr-atstart=no`, instrumentation switched on (`callgrind_control -i on`) once the "
      f"server is ready; on that one server a warm-up run of N connections, then a run of N and "
      f"a run of 4N, each between two `callgrind_control --dump`s (a dump zeroes the counters); "
      f"(Ir(4N) − Ir(N)) / 3N with N={P['n_tool']}; syscalls: `strace -f -c`, same difference "
      f"with N={P['n_strace']}. Both count the whole server program (its event loop, its HTTP).")
    w(f"- Bulk: `loadclient bulk PORT 1 --path /big --expect {P['bulk_bytes']} --suite S`, one "
      f"{P['bulk_bytes'] >> 20} MiB download; server CPU per GB and client-side MB/s. rktls "
      "sends the file with `rktls_connection_sendfile` (userspace encryption here), s_server "
      "reads it with BIO, rustls-ffi sends 'a's from memory.")
    w(f"- Memory: bench/hold.c, one small blocking server per library (same program): accept, "
      f"handshake (ECDSA, TLS 1.3), keep; VmRSS after {P['hold_warm']} held and after "
      f"{P['hold_warm'] + P['hold_n']} held; (difference)/{P['hold_n']}. "
      "Client: `loadclient hold PORT N`. Session caches of the same size: rktls's hold server "
      "sets 256 sessions, rustls's default that rustls-ffi keeps (rktls's own default is 1024).")
    w("- Bound: `openssl speed -seconds 2 ecdsap256 rsa2048 ecdhx25519` and `-evp "
      "aes-128-gcm|aes-256-gcm -bytes 16384`, on CPU 0 (OpenSSL's code, not aws-lc's; "
      "the same order of speed). A full handshake's bound is one signature + two X25519 "
      "(key generation and agreement), a resumed one's two X25519; bulk's is AES-GCM at one "
      "core's speed. \"% of bound\" = bound / measured CPU.\n")

    w("## 1–2. Handshakes (per connection)\n")
    w("| handshake | system | server CPU µs | instructions | syscalls | crypto bound µs | bound / CPU |")
    w("|---|---|---|---|---|---|---|")
    for kind in ("full/ecdsa", "full/rsa", "resume/ecdsa"):
        for s in SYSTEMS:
            k = f"{s}/{kind}"
            cpu, ins, sy = S["cpu"].get(k), S["instr"].get(k), S["sys"].get(k)
            need(f"cpu {k}", cpu), need(f"instructions {k}", ins), need(f"syscalls {k}", sy)
            frac = None if not cpu or not cpu["med"] else bound_us[kind] / cpu["med"]
            w(f"| {kind.replace('/', ' ')} | {s} | {fmt(cpu)} | {fmt(ins)} | {fmt(sy, 1)} | "
              f"{bound_us[kind]:.0f} | {'—' if frac is None else f'{frac:.0%}'} |")
    w("")
    w("Instructions with the suite choice taken out (the client offers one TLS 1.3 suite only, "
      "so both servers negotiate it; rktls's default prefers AES-128-GCM, the others follow "
      "OpenSSL's client, which lists AES-256-GCM first):\n")
    w("| handshake | suite | " + " | ".join(SAME_SUITE_SYSTEMS) + " | rktls ÷ rustls-ffi |")
    w("|---|---|" + "---|" * (len(SAME_SUITE_SYSTEMS) + 1))
    for mode, key in SAME_SUITE_KINDS:
        xs = [S["instr"].get(f"{s}/{mode}/{key}") for s in SAME_SUITE_SYSTEMS]
        for s, x in zip(SAME_SUITE_SYSTEMS, xs):
            need(f"instructions {s}/{mode}/{key}", x)
        r = ratio(xs[0], xs[1])
        w(f"| {mode} ecdsa | {key.split('@')[1]} | " + " | ".join(fmt(x) for x in xs)
          + f" | {'—' if r is None else f'{r:.3f}'} |")
    w("")
    w("## 3. Bulk download, userspace record layer\n")
    w("| suite | system | server CPU s/GB | MB/s | AES-GCM bound s/GB | bound / CPU |")
    w("|---|---|---|---|---|---|")
    for suite in SUITES:
        bs = 1 / b[f"{suite}_gb_s"]
        for s in SYSTEMS:
            x = bulk.get(f"{s}/{suite}", {"cpu_s_per_gb": None, "mb_s": None})
            need(f"bulk cpu {s}/{suite}", x["cpu_s_per_gb"]), need(f"bulk MB/s {s}/{suite}", x["mb_s"])
            frac = None if not x["cpu_s_per_gb"] or not x["cpu_s_per_gb"]["med"] else bs / x["cpu_s_per_gb"]["med"]
            w(f"| {suite} | {s} | {fmt(x['cpu_s_per_gb'], 3)} | {fmt(x['mb_s'])} | {bs:.3f} | "
              f"{'—' if frac is None else f'{frac:.0%}'} |")
    w("")
    vm = R.get("vm")
    w("## 4. kTLS in the test VM (Linux 6.12 under qemu TCG: only ratios inside the VM mean anything)\n")
    vmb = {}
    if vm:
        vp = vm["params"]
        w(f"Inside the VM (2 emulated CPUs; server on CPU 0, client on CPU 1): `server_epoll "
          f"--ktls require|off --quiet` and `openssl s_server -WWW -quiet`, client `loadclient "
          f"bulk` of a {vp['mib']} MiB file, AES-128-GCM, {vp['reps']} repetition(s). "
          "rktls kTLS: TX and RX in the kernel, body by `sendfile(2)` "
          "(checked: /proc/net/tls_stat TlsTxSw grows in every such run, else the figure counts as missing). "
          "Each download's server CPU is net of one `GET /small` connection measured just before "
          "on the same server (the handshake, slow under emulation, would otherwise dominate the "
          "kTLS user time). CPU from /proc/PID/stat in 10 ms ticks.\n")
        w("nginx in the VM: the same nginx binary as one process (`daemon off; master_process "
          "off;`, pinned to CPU 0), configs from bench/nginx_conf.sh as on the host: "
          "nginx-rktls-ktls is `rktls on; rktls_ktls require; sendfile on;` (TX and RX in the "
          "kernel, the file by nginx's own `sendfile(2)`; TlsTxSw must grow), nginx-openssl is "
          "`listen ... ssl` with OpenSSL in userspace (issue #17's comparison), and "
          "nginx-openssl-ktls is nginx-openssl plus `ssl_conf_command Options KTLS;` (Debian's "
          "OpenSSL 3.0 is built with kTLS: its configuration.h does not define OPENSSL_NO_KTLS; "
          "nginx 1.22 then sends files with `SSL_sendfile`). The kernel TLS sockets column is "
          "TlsTxSw's growth per run (rktls also counts its one-time probe of the kernel).\n")
        w("| system | user CPU s/GB | system CPU s/GB | total s/GB | kernel TLS sockets | total vs reference |")
        w("|---|---|---|---|---|---|")
        vm_sys = (("rktls-ktls", "rktls-user"), ("rktls-user", "rktls-user"), ("openssl", "rktls-user"),
                  ("nginx-rktls-ktls", "nginx-openssl"), ("nginx-openssl", "nginx-openssl"),
                  ("nginx-openssl-ktls", "nginx-openssl"))
        for s, _ in vm_sys:
            rows = vm["bulk"].get(s, [])
            vmb[s] = {f: mmm([r[f] for r in rows]) for f in ("user", "sys")}
            vmb[s]["total"] = mmm([r["user"] + r["sys"] for r in rows])
            vmb[s]["offloaded"] = [r["offloaded"] for r in rows]
            need(f"vm user {s}", vmb[s]["user"]), need(f"vm sys {s}", vmb[s]["sys"])
            if s.startswith(("rktls-ktls", "nginx-rktls-ktls")) and not (
                    rows and all(r["offloaded"] > 0 for r in rows)):
                missing.append(f"vm {s} offload (TlsTxSw did not grow)")
        for s, ref in vm_sys:
            rt = ratio(vmb[s]["total"], vmb[ref]["total"])
            w(f"| {s} | {fmt(vmb[s]['user'], 2)} | {fmt(vmb[s]['sys'], 2)} | "
              f"{fmt(vmb[s]['total'], 2)} | {'/'.join(str(x) for x in vmb[s]['offloaded']) or '—'} | "
              f"{r2(rt)} (÷ {ref}) |")
        w("")
        off = vmb["nginx-openssl-ktls"]["offloaded"]
        w("Can nginx + OpenSSL use kTLS here? "
          + ("Yes: with `ssl_conf_command Options KTLS;` TlsTxSw grew in every run, so OpenSSL "
             "put nginx's socket's TX in the kernel (nginx-openssl-ktls row)."
             if off and all(x > 0 for x in off) else
             "No: with `ssl_conf_command Options KTLS;` TlsTxSw did not grow in every run "
             "(nginx-openssl-ktls row: OpenSSL stayed in userspace).") + "\n")
    else:
        missing.append("vm")
        w("Not run.\n")

    w("## 5. Resident memory per idle established connection\n")
    w("| system | bytes per connection |")
    w("|---|---|")
    for s in HOLD_SYSTEMS:
        w(f"| {s} (host, userspace) | {fmt(need('mem ' + s, S['mem'].get(s)))} |")
    vmm = {}
    if vm:
        for s, label in (("rktls-user", "rktls before offload (VM)"), ("rktls-ktls", "rktls after offload (VM)")):
            vmm[s] = mmm([r["per_conn"] for r in vm["mem"].get(s, [])])
            w(f"| {label} | {fmt(need('vm mem ' + s, vmm[s]))} |")
        off = [r["offloaded"] for r in vm["mem"].get("rktls-ktls", [])]
        w(f"\nAfter offload: {off[0] if off else 0} of {vm['params']['warm'] + vm['params']['n']} "
          "connections had TX and RX in the kernel.")
    w("")

    w("## 6. The crypto bound on this machine (openssl speed, one core)\n")
    w(f"ECDSA P-256 sign {b['ecdsa_sign_us']:.1f} µs, RSA-2048 sign {b['rsa_sign_us']:.1f} µs, "
      f"X25519 {b['x25519_us']:.1f} µs; AES-128-GCM {b['AES-128-GCM_gb_s']:.2f} GB/s, "
      f"AES-256-GCM {b['AES-256-GCM_gb_s']:.2f} GB/s.\n")

    # ratios vs targets
    rows = []

    def tgt(label, r, target, lo=None, hi=None):
        rows.append((label, r, target, lo, hi))

    def rr(metric, a, bsys, kind):
        x, y = S[metric].get(f"{a}/{kind}"), S[metric].get(f"{bsys}/{kind}")
        return ratio(x, y)
    for kind in ("full/ecdsa", "full/rsa"):
        kk = kind.replace("full/", "full ")
        tgt(f"{kk}: instructions vs rustls-ffi", rr("instr", "rktls", "rustls-ffi", kind), 0.95)
        tgt(f"{kk}: syscalls vs rustls-ffi", rr("sys", "rktls", "rustls-ffi", kind), 1.0)
        tgt(f"{kk}: CPU vs rustls-ffi", rr("cpu", "rktls", "rustls-ffi", kind), 1.0)
        tgt(f"{kk}: CPU vs OpenSSL", rr("cpu", "rktls", "openssl", kind), 0.6)
    tgt("resumed: instructions vs rustls-ffi", rr("instr", "rktls", "rustls-ffi", "resume/ecdsa"), 1.0)
    for mode, key in SAME_SUITE_KINDS:
        m = "full" if mode == "full" else "resumed"
        tgt(f"{m}, same suite {key.split('@')[1]}: instructions vs rustls-ffi",
            rr("instr", "rktls", "rustls-ffi", f"{mode}/{key}"), 0.95 if mode == "full" else 1.0)
    tgt("resumed: syscalls vs rustls-ffi", rr("sys", "rktls", "rustls-ffi", "resume/ecdsa"), 1.0)
    tgt("resumed: CPU vs OpenSSL", rr("cpu", "rktls", "openssl", "resume/ecdsa"), 0.6)
    for suite in SUITES:
        a = bulk.get(f"rktls/{suite}", {}).get("cpu_s_per_gb")
        tgt(f"bulk {suite}: CPU/GB vs rustls-ffi", ratio(a, bulk.get(f"rustls-ffi/{suite}", {}).get("cpu_s_per_gb")), 1.0)
        tgt(f"bulk {suite}: CPU/GB vs OpenSSL", ratio(a, bulk.get(f"openssl/{suite}", {}).get("cpu_s_per_gb")), 0.7)
    if vm:
        tgt("kTLS+sendfile: user CPU/GB vs rktls userspace", ratio(vmb["rktls-ktls"]["user"], vmb["rktls-user"]["user"]), 0.05)
    tgt("idle memory before offload vs rustls-ffi", ratio(S["mem"].get("rktls"), S["mem"].get("rustls-ffi")), 1.0)
    if vm:
        k = vmm.get("rktls-ktls")
        tgt("idle memory after offload vs 1 KiB", None if k is None else k["med"] / 1024, 1.0)
    # nginx + rktls against nginx + OpenSSL (#17 gives no target: 1.0 is parity)
    nrows = []
    for kind in ("full/ecdsa", "full/rsa", "resume/ecdsa"):
        kk = kind.replace("/", " ")
        for metric, name in (("cpu", "server CPU"), ("instr", "instructions"), ("sys", "syscalls")):
            nrows.append((f"nginx {kk}: {name}, rktls vs OpenSSL",
                          rr(metric, "nginx-rktls", "nginx-openssl", kind), 1.0, None, None))
    for suite in SUITES:
        nrows.append((f"nginx bulk {suite}: CPU/GB, rktls vs OpenSSL",
                      ratio(bulk.get(f"nginx-rktls/{suite}", {}).get("cpu_s_per_gb"),
                            bulk.get(f"nginx-openssl/{suite}", {}).get("cpu_s_per_gb")), 1.0, None, None))
    if vm:
        nrows.append(("nginx VM: kTLS+sendfile user CPU/GB vs OpenSSL userspace",
                      ratio(vmb["nginx-rktls-ktls"]["user"], vmb["nginx-openssl"]["user"]), 1.0, None, None))
        nrows.append(("nginx VM: kTLS+sendfile total CPU/GB vs OpenSSL userspace",
                      ratio(vmb["nginx-rktls-ktls"]["total"], vmb["nginx-openssl"]["total"]), 1.0, None, None))
        nrows.append(("nginx VM: kTLS+sendfile total CPU/GB vs OpenSSL with Options KTLS",
                      ratio(vmb["nginx-rktls-ktls"]["total"], vmb["nginx-openssl-ktls"]["total"]), 1.0, None, None))
    w("## Ratios against the issue's targets\n")
    w("Ratios of medians measured in this run (rktls ÷ the other; ≤ target is met).\n")
    w("| ratio | measured | target | met |")
    w("|---|---|---|---|")
    for label, r, target, _, _ in rows:
        need(f"ratio {label}", r)
        w(f"| {label} | {r2(r)} | ≤ {target} | {'—' if r is None else ('yes' if r <= target else '**no**')} |")
    w("")
    w("### nginx + rktls ÷ nginx + OpenSSL (issue #17)\n")
    w("Ratios of medians, nginx-rktls ÷ nginx-openssl (the VM rows: nginx-rktls-ktls ÷ "
      "nginx-openssl). Issue #17 sets no target: the line is parity (1.0), below it nginx on "
      "rktls is the cheaper.\n")
    w("| ratio | measured | below parity |")
    w("|---|---|---|")
    for label, r, target, _, _ in nrows:
        need(f"ratio {label}", r)
        w(f"| {label} | {r2(r)} | {'—' if r is None else ('yes' if r <= target else '**no**')} |")
    w("")
    rows += nrows
    chart = os.path.splitext(out)[0] + "-ratios.png"
    if make_chart(rows, chart):
        w(f"![ratios against targets]({os.path.basename(chart)})\n")
        w(f"Chart: {os.path.basename(chart)} — each bar is measured ÷ target (log scale); "
          "below the line at 1 the target is met. The nginx rows' target is parity (1.0): "
          "their bar is the ratio nginx+rktls ÷ nginx+OpenSSL itself.\n")
    else:
        missing.append("chart")
    w(ANALYSIS)
    w("## Reproduce\n")
    w("```\nmake bench          # this file (about 10-20 minutes)\nmake bench-quick    "
      "# small counts, into build/bench/quick/ (part of make test)\n```")
    w("Raw numbers of the last run: build/bench/results.json; callgrind profiles of the 4N runs: "
      "build/bench/callgrind/ (`callgrind_annotate --inclusive=yes FILE`).\n")
    w("## Earlier figures (scripts/bench.sh before issue #14, bench/RESULTS.md)\n")
    w(R.get("earlier", EARLIER))
    if vm and vm.get("heap"):
        w("Userspace heap held per established server connection (tests/vm/mem_probe.c, "
          "mallinfo2, TLS 1.3, 64 connections, in the VM):\n")
        w("```\n" + "\n".join(vm["heap"]) + "\n```\n")
    with open(out, "w") as f:
        f.write("\n".join(L) + "\n")
    return missing


ANALYSIS = ""  # filled from bench/analysis.md if present
EARLIER = ""


def make_chart(rows, path):
    gp = shutil.which("gnuplot")
    if not gp:
        return False
    data = path + ".dat"
    with open(data, "w") as f:
        for i, (label, r, target, _, _) in enumerate(rows):
            if r is None:
                continue
            rel = max(r / target, 1e-3)
            f.write(f'{i} "{label}: {r:.2f} (target {target})" {rel:.4f} '
                    f'{0x2e7d32 if rel <= 1 else 0xc62828}\n')
    script = f"""
set terminal pngcairo size 1000,{120 + 28 * len(rows)} font "sans,10"
set output "{path}"
set title "rktls: measured ratio / target (below 1 = met; nginx rows: ratio to parity)"
set logscale x
set xrange [0.01:30]
set yrange [{len(rows)}:-1]
set ytics scale 0
set grid x
set key off
set style fill solid 0.8
set arrow from 1, graph 0 to 1, graph 1 nohead lw 2 dt 2 lc rgb "black"
plot "{data}" using (sqrt($3*0.01)):1:(0.01):3:($1-0.35):($1+0.35):4:ytic(2) with boxxyerror lc rgb variable
"""
    r = subprocess.run([gp], input=script, text=True, capture_output=True)
    os.remove(data)
    return r.returncode == 0 and os.path.exists(path)


def load_texts():
    global ANALYSIS, EARLIER
    here = os.path.join(ROOT, "bench")
    try:
        ANALYSIS = open(os.path.join(here, "analysis.md")).read() + "\n"
    except OSError:
        pass
    try:
        EARLIER = open(os.path.join(BB, "earlier.md")).read() + "\n"
    except OSError:
        EARLIER = "Not run.\n"


if __name__ == "__main__":
    load_texts()
    main()
