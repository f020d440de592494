"""Hands a Workload API connection to another program, for tests/front.rs.

  relay RELAY            the connection is standard input; relay it to the Unix socket RELAY
  exec SOCK TARGET RELAY connect to SOCK, say hello, wait for the server's first frame, then
                         exec TARGET (another Python) with `relay RELAY` on the connection
  connect SOCK RELAY     connect to SOCK, say hello, wait for the first frame, then relay
"""
import os
import socket
import sys
import threading

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def pump(src, dst):
    # A reset (the server dropping the connection) ends the stream like a close does: the
    # other side must see it, not wait for bytes that will never come.
    while True:
        try:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
        except OSError:
            break
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay(conn, relay_path):
    peer = socket.socket(socket.AF_UNIX)
    peer.connect(relay_path)
    threading.Thread(target=pump, args=(conn, peer), daemon=True).start()
    pump(peer, conn)


def hello(sock_path):
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(sock_path)
    conn.sendall(PREFACE + SETTINGS)
    head = b""
    while len(head) < 9:
        head += conn.recv(9 - len(head))
    length = int.from_bytes(head[:3], "big")
    while length:
        length -= len(conn.recv(length))
    return conn


def main():
    mode = sys.argv[1]
    if mode == "relay":
        relay(socket.socket(fileno=0), sys.argv[2])
    elif mode == "exec":
        conn = hello(sys.argv[2])
        os.dup2(conn.fileno(), 0)
        target = sys.argv[3]
        os.execv(target, [target, __file__, "relay", sys.argv[4]])
    elif mode == "connect":
        relay(hello(sys.argv[2]), sys.argv[3])


main()
