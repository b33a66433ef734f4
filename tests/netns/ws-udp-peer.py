#!/usr/bin/env python3
"""ws-udp-peer.py ws HOST PORT CONNS MESSAGES | udp HOST PORT DATAGRAMS

ws: CONNS WebSocket connections to /echo (examples/websocket), each sending
MESSAGES binary messages of random sizes (every third fragmented), each
echo compared byte for byte, then the close handshake. Exit 0 when every
byte came back; prints the bytes verified.

udp: DATAGRAMS datagrams (random sizes, a sequence number and a checksum
in each) to examples/udp-echo, paced; every echo must be intact (a
corrupt or unknown one fails), losses are counted and printed. Exit 0
unless a datagram came back wrong."""
import hashlib
import os
import random
import socket
import struct
import sys
import threading
import time

TIMEOUT = 30.0


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        k = s.recv(n - len(b))
        if not k:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += k
    return b


def frame(op, p, fin=True):
    mask = os.urandom(4)
    n = len(p)
    h = bytes([(0x80 if fin else 0) | op])
    if n < 126:
        h += bytes([0x80 | n])
    elif n < 65536:
        h += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        h += bytes([0x80 | 127]) + struct.pack(">Q", n)
    m = (mask * (n // 4 + 1))[:n]
    return h + mask + (int.from_bytes(p, "big") ^
                       int.from_bytes(m, "big")).to_bytes(n, "big")


def read_frame(s):
    b0, b1 = recv_exact(s, 2)
    n = b1 & 0x7f
    if n == 126:
        (n,) = struct.unpack(">H", recv_exact(s, 2))
    elif n == 127:
        (n,) = struct.unpack(">Q", recv_exact(s, 8))
    return b0 & 0x0f, recv_exact(s, n)


def ws_conn(host, port, nmsg, seed, out, i):
    r = random.Random(seed)
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += recv_exact(s, 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise ValueError("handshake: %r" % head[:60])
    verified = 0
    for k in range(nmsg):
        p = r.randbytes(r.choice([1, 125, 126, 4000, 30000, 70000]))
        if k % 3 == 2:
            a = len(p) // 2
            s.sendall(frame(2, p[:a], False) + frame(0, p[a:]))
        else:
            s.sendall(frame(2, p))
        op, q = read_frame(s)
        if op != 2 or q != p:
            raise ValueError("message %d: opcode %d, %d of %d bytes, %s" % (
                k, op, len(q), len(p), "equal" if q == p else "different"))
        verified += len(p)
    s.sendall(frame(8, struct.pack(">H", 1000)))
    op, q = read_frame(s)
    if op != 8 or q[:2] != struct.pack(">H", 1000):
        raise ValueError("close reply: opcode %d %r" % (op, q[:2]))
    s.close()
    out[i] = verified


def ws_main(host, port, conns, nmsg):
    out, errs = [None] * conns, []

    def run(i):
        try:
            ws_conn(host, port, nmsg, 100 + i, out, i)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errs.append("conn %d: %r" % (i, e))
    ts = [threading.Thread(target=run, args=(i,)) for i in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        print("ws: FAIL " + "; ".join(errs))
        return 1
    print("ws: %d connections, %d messages, %d bytes verified, close 1000"
          % (conns, conns * nmsg, sum(out)))
    return 0


def udp_main(host, port, n):
    r = random.Random(7)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.05)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sent, seen, bad = {}, set(), 0
    lost_early = [0]  # given up on while sending

    def take():
        nonlocal bad
        try:
            d = s.recv(65536)
        except socket.timeout:
            return False
        if len(d) < 20:
            bad += 1
            return True
        (seq,) = struct.unpack(">I", d[:4])
        if sent.get(seq) != d or hashlib.sha1(d[20:]).digest()[:16] != d[4:20]:
            bad += 1
        else:
            seen.add(seq)
        return True
    for seq in range(n):
        body = r.randbytes(r.randint(0, 1200))
        d = struct.pack(">I", seq) + hashlib.sha1(body).digest()[:16] + body
        sent[seq] = d
        s.sendto(d, (host, port))
        # Paced: at most 16 unanswered (a timeout counts them as lost).
        while seq + 1 - len(seen) - lost_early[0] > 16:
            if not take():
                lost_early[0] = seq + 1 - len(seen)
                break
    end = time.monotonic() + 3
    while time.monotonic() < end and len(seen) < n:
        take()
    lost = n - len(seen)
    print("udp: %d datagrams, %d echoed intact, %d lost (%.1f%%), %d wrong"
          % (n, len(seen), lost, 100.0 * lost / n, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    a = sys.argv
    if a[1] == "ws":
        sys.exit(ws_main(a[2], int(a[3]), int(a[4]), int(a[5])))
    sys.exit(udp_main(a[2], int(a[3]), int(a[4])))
