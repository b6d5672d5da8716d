"""Client-side probes of `cargo xtask bench`, run inside the client namespace
(`ip netns exec <client> python3 netprobe.py ...`); Python's standard library only.

  netprobe.py wait HOST PORT SECONDS
      prints "waiting", then tries every 5 ms to connect and get an echo of a short message
      (proof the service answers, not just that a port is bound); prints "reachable" and
      exits 0 as soon as it does, exits 1 after SECONDS.
  netprobe.py rr HOST PORT COUNT SIZE
      one TCP connection; COUNT round trips of SIZE bytes to an echo server; prints
      "p50_us p99_us mean_us" over the round trips after 100 untimed ones.
"""
import socket
import sys
import time


def echo_once(host, port, timeout):
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        conn.sendall(b"ping\n")
        got = b""
        while len(got) < 5:
            chunk = conn.recv(16)
            if not chunk:
                return False
            got += chunk
        return got == b"ping\n"


def wait(host, port, seconds):
    print("waiting", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if echo_once(host, port, 0.2):
                print("reachable", flush=True)
                return 0
        except OSError:
            pass
        time.sleep(0.005)
    return 1


def rr(host, port, count, size):
    payload = b"x" * size
    samples = []
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for round_ in range(100 + count):
            start = time.perf_counter_ns()
            conn.sendall(payload)
            got = 0
            while got < size:
                chunk = conn.recv(size - got)
                if not chunk:
                    raise SystemExit("the echo server closed the connection")
                got += len(chunk)
            if round_ >= 100:
                samples.append(time.perf_counter_ns() - start)
    samples.sort()
    pick = lambda q: samples[round((len(samples) - 1) * q)] / 1000
    print(f"{pick(0.5):.1f} {pick(0.99):.1f} {sum(samples) / len(samples) / 1000:.1f}")
    return 0


def main():
    command, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if command == "wait":
        return wait(host, port, float(sys.argv[4]))
    if command == "rr":
        return rr(host, port, int(sys.argv[4]), int(sys.argv[5]))
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    sys.exit(main())
