"""A Python sandboxee using aiosandbox.client, for executor modes (b) and (c).

    py_client.py me-here      mode (b): sandbox_me_here, then serve requests
    py_client.py fork-server  mode (c): fork a child per request; each child then
                              calls sandbox_me_here and serves requests
    py_client.py shared-fork-server
                              the protocol of mode (c) as it was before children got
                              namespaces of their own: a plain fork, in the fork
                              server's namespaces (the supervisor must refuse them)

Serving requests: receive strings and answer each; "" ends with exit code 0; "socket"
makes a TCP socket (a violation under the Python preset); "pid" answers the pid; "msg"
echoes one msgpack message; "fd" reads a received fd and answers its bytes; "read:N" answers
what fd N holds; "named:NAME" what the fd mapped under NAME holds; "exit:N" exits with N;
"thread" answers a sum computed in a new thread; "abort" aborts.

What a hostile child of a fork server would try against its siblings: "hold" receives bytes
and keeps them in SECRET, whose address is the same in every child of one fork server;
"killall" is kill(-1, SIGKILL) and answers "killed" or the error; "probe" tries, on every
pid from 1 to 1024 and in /proc but its own, kill(pid, 0), a read of SECRET's address through
/proc/<pid>/mem and pidfd_getfd() of its fd 1023, and answers "signal=P,P steal=P,P
read=TEXT|TEXT".
"""

import ctypes
import os
import signal
import socket
import sys
import threading

from aiosandbox._comms._wire import TAG_FORK_GO, TAG_FORK_REQUEST
from aiosandbox.client import Client, ForkingClient
from aiosandbox.client._forking import arrange_fds
from aiosandbox.client._request import parse_fork_request

SECRET = bytearray(64)  # allocated in the fork server: at one address in all its children
_NR_PIDFD_GETFD = 438


def probe() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    address = ctypes.addressof(ctypes.c_char.from_buffer(SECRET))
    candidates = set(range(1, 1025))
    try:
        candidates |= {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}
    except OSError:
        pass
    signalled, stolen, read = [], [], []
    for pid in sorted(candidates - {os.getpid()}):
        try:
            os.kill(pid, 0)
            signalled.append(str(pid))
        except OSError:
            pass
        try:
            fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        except OSError:
            pass
        else:
            try:
                data = os.pread(fd, len(SECRET), address).rstrip(b"\0")
            except OSError:
                data = b""
            os.close(fd)
            if data:
                read.append(data.decode(errors="replace"))
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        taken = libc.syscall(_NR_PIDFD_GETFD, pidfd, 1023, 0)
        if taken >= 0:
            stolen.append(str(pid))
            os.close(taken)
        os.close(pidfd)
    return f"signal={','.join(signalled)} steal={','.join(stolen)} read={'|'.join(read)}"


def serve(client: Client) -> None:
    comms = client.comms
    while True:
        request = comms.recv_string()
        if request == "":
            return
        if request == "socket":
            socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
            comms.send_string("made a socket")
        elif request == "pid":
            comms.send_int64(os.getpid())
        elif request == "msg":
            comms.send_msg(comms.recv_msg())
        elif request == "fd":
            fd = comms.recv_fd()
            comms.send_bytes(os.read(fd, 1 << 16))
            os.close(fd)
        elif request.startswith("named:"):
            comms.send_bytes(os.read(client.get_mapped_fd(request[6:]), 1 << 16))
        elif request.startswith("read:"):
            comms.send_bytes(os.read(int(request[5:]), 1 << 16))
        elif request == "thread":
            sums: list[int] = []
            worker = threading.Thread(target=sums.append, args=(sum(range(100)),))
            worker.start()
            worker.join()
            comms.send_string(f"thread says {sums[0]}")
        elif request.startswith("exit:"):
            sys.exit(int(request[5:]))
        elif request == "abort":
            os.abort()
        elif request == "hold":
            data = comms.recv_bytes()[: len(SECRET)]
            SECRET[: len(data)] = data  # in place: the buffer stays where it is
            comms.send_string("holding")
        elif request == "killall":
            try:
                os.kill(-1, signal.SIGKILL)
                comms.send_string("killed")
            except OSError as exc:
                comms.send_string(exc.strerror or "failed")
        elif request == "probe":
            comms.send_string(probe())
        else:
            comms.send_string(request.upper())


def shared_fork_server() -> None:
    comms = ForkingClient().comms
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        try:
            _tag, payload = comms.recv_frame((TAG_FORK_REQUEST,))
        except Exception:
            sys.exit(0)  # the supervisor is done
        request = parse_fork_request(payload)
        fds = [comms.recv_fd() for _ in range(request.fd_count)]
        if os.fork():
            for fd in fds:
                os.close(fd)
            continue
        os.setsid()
        arrange_fds(fds, (1023, *request.targets))  # the comms object now wraps the child's
        comms.send_creds()
        comms.recv_frame((TAG_FORK_GO,))
        os._exit(0)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "shared-fork-server":
        shared_fork_server()
    if mode == "fork-server":
        forking = ForkingClient()
        while forking.wait_and_fork() != 0:
            pass
    elif mode != "me-here":
        sys.exit(f"usage: {sys.argv[0]} me-here|fork-server")
    client = Client()
    client.sandbox_me_here()
    serve(client)


if __name__ == "__main__":
    main()
