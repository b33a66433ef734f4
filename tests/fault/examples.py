#!/usr/bin/env python3
"""examples.py BUILD_DIR [NAME...] - each example server, built on the
renamed library (fault-NAME), under its own load: once to count its calls,
then failing call N of every kind (every N up to FAULT_CAP, default 6,
beyond it half the cap first and a seeded sample of the rest), then with
transient faults at random (FAULT_RANDOM runs, default 3). A run passes
when the server neither crashed, hung nor reported a sanitizer error,
stopped on SIGTERM, and every load connection was either served fully
(every reply checked) or closed, at most one of them hurt by one fault
(all served without one). Ends with one summary line; exit 1 on a failure.
"""
import concurrent.futures as cf
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = 5.0  # per socket operation: past it the server is hung
SAN = re.compile(rb"ERROR: (Address|Leak)Sanitizer|runtime error:|Sanitizer")


class Closed(Exception):
    """The server closed the connection (a legitimate end under faults)."""


def dial(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        try:
            k = s.recv(n - len(b))
        except socket.timeout:
            raise
        except OSError:
            raise Closed()
        if not k:
            raise Closed()
        b += k
    return b


def send(s, data):
    try:
        s.sendall(data)
    except socket.timeout:
        raise
    except OSError:
        raise Closed()


def expect_eof(s):
    try:
        while s.recv(4096):
            pass
    except socket.timeout:
        raise
    except OSError:
        pass


# ---- the loads: each returns nothing when served, raises Closed, or
# AssertionError for a wrong byte, socket.timeout for a hang ------------

def load_echo(port, seed):
    r = random.Random(seed)
    with dial(port) as s:
        for _ in range(8):
            chunk = r.randbytes(r.randint(1, 8192))
            send(s, chunk)
            assert recv_exact(s, len(chunk)) == chunk, "echo mismatch"
        s.shutdown(socket.SHUT_WR)
        expect_eof(s)


def load_http(port, seed):
    req = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
    with dial(port) as s:
        buf = b""
        for batch in (7, 13):
            send(s, req * batch)
            for _ in range(batch):
                while b"\r\n\r\n" not in buf:
                    buf += recv_exact(s, 1) if not buf else s.recv(4096) or _eof()
                head, buf = buf.split(b"\r\n\r\n", 1)
                assert head.startswith(b"HTTP/1.1 200"), head[:40]
                n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                while len(buf) < n:
                    buf += s.recv(4096) or _eof()
                body, buf = buf[:n], buf[n:]
                assert body == b"Hello, World!", body


def _eof():
    raise Closed()


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def load_redis(port, seed):
    r = random.Random(seed)
    with dial(port) as s:
        f = s.makefile("rb")
        keys = [(b"k%d-%d" % (seed, i), r.randbytes(r.randint(0, 300)))
                for i in range(20)]
        send(s, b"".join(resp(b"SET", k, v) + resp(b"GET", k)
                         for k, v in keys))
        try:
            for k, v in keys:
                ok = f.readline()
                if not ok:
                    raise Closed()
                assert ok == b"+OK\r\n", "SET %r" % ok
                hdr = f.readline()
                if not hdr:
                    raise Closed()
                assert hdr == b"$%d\r\n" % len(v), hdr
                assert f.read(len(v) + 2) == v + b"\r\n", "GET value"
        except (ConnectionError, ValueError):
            raise Closed()


def load_framing(port, seed):
    r = random.Random(seed)
    with dial(port) as s:
        for _ in range(20):
            p = r.randbytes(r.randint(0, 4096))
            send(s, struct.pack(">I", len(p)) + p)
            (n,) = struct.unpack(">I", recv_exact(s, 4))
            assert n == len(p), "frame length"
            assert recv_exact(s, n) == p[::-1], "frame payload"


def load_timer(port, seed):
    with dial(port) as s:
        f = s.makefile("rb")
        pings, echoed = 0, False
        send(s, b"hello %d\n" % seed)
        while pings < 3 or not echoed:
            line = f.readline()
            if not line:
                raise Closed()
            if line.startswith(b"ping "):
                pings += 1
            elif line == b"hello %d\n" % seed:
                echoed = True
            else:
                raise AssertionError("unexpected line %r" % line)


def ws_frame(op, payload, fin=True):
    """A masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    h = bytes([(0x80 if fin else 0) | op])
    if n < 126:
        h += bytes([0x80 | n])
    elif n < 65536:
        h += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        h += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return h + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_read(s):
    """One unfragmented server frame: (opcode, payload)."""
    b0, b1 = recv_exact(s, 2)
    assert b0 & 0x80 and not b1 & 0x80, "server frame header %x %x" % (b0, b1)
    n = b1 & 0x7f
    if n == 126:
        (n,) = struct.unpack(">H", recv_exact(s, 2))
    elif n == 127:
        (n,) = struct.unpack(">Q", recv_exact(s, 8))
    return b0 & 0x0f, recv_exact(s, n)


def load_websocket(port, seed):
    """The /echo endpoint: whole messages, one fragmented around a ping,
    then the close handshake; every byte checked."""
    r = random.Random(seed)
    with dial(port) as s:
        send(s, b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += recv_exact(s, 1)
        assert head.startswith(b"HTTP/1.1 101"), "handshake %r" % head[:40]
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head, "accept key"
        for i in range(5):
            p = r.randbytes(r.choice([0, 1, 125, 126, 3000, 70000]))
            if i == 2 and len(p) > 3:
                a, b = len(p) // 3, 2 * len(p) // 3
                send(s, ws_frame(2, p[:a], False) + ws_frame(9, b"pi") +
                     ws_frame(0, p[a:b], False) + ws_frame(0, p[b:]))
                op, q = ws_read(s)
                if op == 8:
                    raise Closed()
                assert (op, q) == (10, b"pi"), "pong"
            else:
                send(s, ws_frame(2, p))
            op, q = ws_read(s)
            if op == 8:
                raise Closed()  # the server failed it, visibly
            assert (op, q) == (2, p), "echo of %d bytes" % len(p)
        send(s, ws_frame(8, struct.pack(">H", 1000)))
        op, q = ws_read(s)
        assert op == 8 and q[:2] == struct.pack(">H", 1000), "close reply"
        expect_eof(s)


def load_udp_echo(port, seed):
    """Datagrams one at a time, each echo checked; a lost one (0.5 s) is
    a hurt load, fine only under a fault."""
    r = random.Random(seed)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for _ in range(12):
            p = r.randbytes(r.randint(0, 1400))
            s.sendto(p, ("127.0.0.1", port))
            try:
                q = s.recv(65536)
            except socket.timeout:
                raise Closed()
            assert q == p, "udp echo of %d bytes" % len(p)
    load_echo(port, seed)  # and the TCP echo on the same port


def dns_query(qid, name):
    q = b"".join(bytes([len(x)]) + x for x in name.encode().split(b"."))
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + b"\0" + \
        struct.pack(">HH", 1, 1)


def dns_check(qid, name, reply):
    rid, flags, qd, an = struct.unpack(">HHHH", reply[:8])
    assert rid == qid and flags & 0x8000, "dns reply id/QR"
    rcode = flags & 0xf
    if name.startswith("www."):
        assert rcode == 0 and an >= 1, "www: rcode %d, %d answers" % (rcode, an)
    else:
        assert rcode == 3, "nxdomain: rcode %d" % rcode


def load_dns(port, seed):
    """A and NXDOMAIN queries over UDP (each answer checked), then one
    over TCP with its 2-byte length."""
    r = random.Random(seed)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for i in range(8):
            name = "www.gev.test" if i % 2 == 0 else "nope%d.gev.test" % i
            qid = r.randint(0, 65535)
            s.sendto(dns_query(qid, name), ("127.0.0.1", port))
            try:
                dns_check(qid, name, s.recv(4096))
            except socket.timeout:
                raise Closed()
    with dial(port) as s:
        qid = r.randint(0, 65535)
        m = dns_query(qid, "www.gev.test")
        send(s, struct.pack(">H", len(m)) + m)
        (n,) = struct.unpack(">H", recv_exact(s, 2))
        dns_check(qid, "www.gev.test", recv_exact(s, n))


def upstream_echo():
    """A plain echo server on a thread, the proxy's upstream."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)

    def serve(c):
        with c:
            try:
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    c.sendall(b)
            except OSError:
                pass

    def accept():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return ls


UPSTREAM = None
EXAMPLES = {  # name: (load, connections, extra arguments)
    "echo": (load_echo, 4, []),
    "http": (load_http, 4, []),
    "redis": (load_redis, 4, []),
    "framing": (load_framing, 4, ["-m", "64k"]),
    "timer": (load_timer, 3, ["-i", "40", "-k", "3000", "-b", "100"]),
    "proxy": (load_echo, 4, ["-u", None]),
    "websocket": (load_websocket, 4, []),
    "udp-echo": (load_udp_echo, 4, []),
    "dns": (load_dns, 3, []),
}


def one_run(build, name, env_extra):
    load, nconn, extra = EXAMPLES[name]
    extra = [UPSTREAM if a is None else a for a in extra]
    rep = tempfile.NamedTemporaryFile(prefix="gev-fault-", delete=False)
    rep.close()
    env = dict(os.environ, FAULT_REPORT=rep.name, **env_extra)
    p = subprocess.Popen([os.path.join(build, "tests/fault/fault-" + name),
                          "-p", "0", "-l", "2"] + extra, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outcomes, problems = [], []
    line = p.stdout.readline()
    m = re.search(rb"listening on [^:]+:(\d+)", line)
    if m:
        port = int(m.group(1))
        res = [None] * nconn

        def client(i):
            try:
                load(port, 1000 + i)
                res[i] = "full"
            except Closed:
                res[i] = "closed"
            except socket.timeout:
                res[i] = "hang"
            except (ConnectionRefusedError, ConnectionResetError,
                    BrokenPipeError):
                res[i] = "closed"
            except AssertionError as e:
                res[i] = "bad: %s" % e
        ts = [threading.Thread(target=client, args=(i,)) for i in range(nconn)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        outcomes = res
        p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        problems.append("hung at shutdown")
    counts = {}
    try:
        with open(rep.name) as f:
            for ln in f:
                k, v = ln.split()
                counts[k] = int(v)
    except (OSError, ValueError):
        pass
    os.unlink(rep.name)
    if SAN.search(err):
        problems.append("sanitizer report:\n" + err.decode(errors="replace"))
    elif p.returncode < 0:
        problems.append("killed by signal %d" % -p.returncode)
    if not m and not problems:
        # Set-up failed: must say so and exit with an error status.
        if p.returncode == 0 or not err.strip():
            problems.append("no listening line, exit %d, stderr %r"
                            % (p.returncode, err[-200:]))
    for o in outcomes:
        if o == "hang" or o.startswith("bad"):
            problems.append("a load connection: " + o)
    hurt = sum(o != "full" for o in outcomes)
    injected = counts.get("injected", 0)
    # gev_server_start failed (a worker thread, say): it said so and
    # exited 1; then every connection may be gone.
    start_failed = (p.returncode == 1 and b"server failed:" in err)
    if m and p.returncode != 0 and not start_failed and not problems:
        problems.append("exit status %d after SIGTERM" % p.returncode)
    if start_failed and "FAULT_KIND" in env_extra:
        hurt = 0
    if (injected == 0 or "FAULT_SEED" in env_extra) and (hurt or not m):
        problems.append("%d of %d connections hurt without a hard fault%s"
                        % (hurt, nconn, "" if m else " (no server)"))
    if hurt > 1 and "FAULT_KIND" in env_extra:
        problems.append("one fault hurt %d of %d connections" % (hurt, nconn))
    return counts, problems, outcomes


def plan(hits, cap, rng):
    if hits <= cap:
        return list(range(1, hits + 1))
    first = list(range(1, cap // 2 + 1))
    return first + rng.sample(range(cap // 2 + 1, hits + 1), cap - len(first))


def main():
    global UPSTREAM
    build = sys.argv[1]
    names = sys.argv[2:] or list(EXAMPLES)
    cap = int(os.environ.get("FAULT_CAP", "6"))
    nrand = int(os.environ.get("FAULT_RANDOM", "3"))
    seed = int(os.environ.get("FAULT_SEED_BASE", "1"))
    jobs = int(os.environ.get("FAULT_JOBS", str(min(4, os.cpu_count() or 2))))
    up = upstream_echo()
    UPSTREAM = "127.0.0.1:%d" % up.getsockname()[1]
    total_runs = total_fail = 0
    for name in names:
        counts, problems, _ = one_run(build, name, {})
        if problems:
            print("FAIL %s count: %s" % (name, "; ".join(problems)))
            total_fail += 1
            total_runs += 1
            continue
        rng = random.Random(seed)
        runs = [{"FAULT_KIND": k, "FAULT_NTH": str(n)}
                for k, v in counts.items() if k != "injected"
                for n in plan(v, cap, rng)]
        runs += [{"FAULT_SEED": str(seed * 100 + i)} for i in range(nrand)]
        fails = 0
        with cf.ThreadPoolExecutor(jobs) as pool:
            futs = {pool.submit(one_run, build, name, e): e for e in runs}
            for fu in cf.as_completed(futs):
                _, problems, outcomes = fu.result()
                if problems:
                    fails += 1
                    e = futs[fu]
                    what = ("%s#%s" % (e["FAULT_KIND"], e["FAULT_NTH"])
                            if "FAULT_KIND" in e else
                            "random(seed %s)" % e["FAULT_SEED"])
                    print("FAIL %s %s: %s (load: %s)" % (
                        name, what, "; ".join(problems), outcomes))
                    sys.stdout.flush()
        kinds = ", ".join("%s %d" % (k, v) for k, v in counts.items()
                          if v and k != "injected")
        print("fault example-%s: %d calls counted (%s); %d runs, %d failed"
              % (name, sum(v for k, v in counts.items() if k != "injected"),
                 kinds, len(runs) + 1, fails))
        sys.stdout.flush()
        total_runs += len(runs) + 1
        total_fail += fails
    up.close()
    print("fault examples: %d runs, %d failed" % (total_runs, total_fail))
    return 1 if total_fail else 0


if __name__ == "__main__":
    sys.exit(main())
