"""The examples of README.md and of SPEC.md section 2, checked by ``mypy --strict``.

scripts/run-tests type-checks this file and never runs it. Each block between ``# fmt: off``
and ``# fmt: on`` is a code block of README.md as written there, dedented
(``tests/package/test_type_tests.py`` checks that they match, so an example edited in the README is
checked here too); around them stand the names a snippet takes from its context, and the
README's prose examples. ``assert_type`` keeps a chain from passing because it became ``Any``,
and each ``# type: ignore[...]`` is an error that must stay one: mypy --strict reports an
ignore that is no longer needed (``warn_unused_ignores``).
"""

from __future__ import annotations

import errno
from typing import assert_type

import anyio

import aiosandbox
from aiosandbox import Buffer, Comms, Limits, Policy, Result, Status, Violation
from aiosandbox.client import Client, ForkingClient
from aiosandbox.policy import PolicyFile

# --- README: "A first sandbox" (it imports the rest of the names used here) ------------

# fmt: off
# isort: off
import asyncio
from aiosandbox import PIPE, Executor, PolicyBuilder, Sandbox, bpf
# isort: on

async def main() -> None:
    executor = Executor("/path/to/static_binary", ["static_binary", "arg1"], stdout=PIPE)
    executor.limits.rlimit_as = 64 << 20          # bytes
    executor.limits.wall_time_limit = 10           # seconds
    policy = (PolicyBuilder()
              .allow_static_startup()
              .allow_read()
              .allow_exit()
              .add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW), bpf.KILL])
              .add_tmpfs("/tmp", size=4 << 20)
              .build())
    result = await Sandbox(executor, policy).run()
    print(result)            # e.g. "OK - exit code 0, wall time 0.003 s"
    print(result.stdout)

asyncio.run(main())
# fmt: on


# --- README: "Running asynchronously" --------------------------------------------------


async def run_async(executor: Executor, policy: Policy) -> Result:
    # fmt: off
    async with Sandbox(executor, policy) as sandbox:   # started; killed and reaped on exit
        sandbox.set_wall_time_limit(5)
        result = await sandbox.await_result()
    # fmt: on
    assert_type(result, Result)
    return result


# --- README: "The three executor modes" ------------------------------------------------


def modes(path: str, args: list[str]) -> None:
    # fmt: off
    Executor(path, args)                              # (a) sandboxed before exec
    Executor(path, args, sandbox_before_exec=False)   # (b) the binary calls sandbox_me_here()
    Executor.from_fork_server(Executor(path, args))   # (c) forked from a custom fork server
    # fmt: on
    assert_type(Executor.from_fork_server(Executor(path, args)), Executor)


# --- README: "Many runs of one program, and Python snippets" ----------------------------


async def pools(grader: str, policy: Policy, test_case: bytes) -> None:
    from aiosandbox import PythonPool, SandboxPool

    # fmt: off
    async with SandboxPool(Executor(grader, [grader], stdout=PIPE), policy, size=4) as pool:
        result = await pool.run(input=test_case)        # a fresh sandboxee, exec'd ahead

    async with PythonPool() as pool:                      # allow_python() by default
        result = await pool.run("print(sum(range(100)))")  # a fresh interpreter, started ahead
    # fmt: on
    assert_type(result, Result)


# --- SPEC.md section 2, as written but for allow_host (see not_yet_built) ---------------

# fmt: off
policy = (PolicyBuilder()
          .allow_static_startup()          # or .allow_dynamic_startup()
          .allow_read().allow_write().allow_exit()
          .allow_system_malloc().allow_time()
          .allow_syscall("getpid")          # a name or a number, also allow_syscalls([...])
          .add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW), bpf.KILL])
          .block_syscall_with_errno("open", errno.ENOENT)
          .add_file("/etc/hostname")                  # read-only unless writable=True
          .add_file_at("/host/path", "/inside/path")
          .add_directory("/usr/lib", writable=False)
          .add_tmpfs("/tmp", size=4 << 20)
          .add_libraries_for_binary("/path/to/binary")
          .allow_ipv4("127.0.0.1/32", 80)             # network proxy rules (section 5)
          .allow_ipv6("::1/128", 443)
          .build())                                   # -> Policy; raises PolicyError
# fmt: on
assert_type(policy, Policy)

# The pattern of SPEC section 2 with the block in a variable: a list[BlockPart], a bpf.Block.
block = [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW), bpf.KILL]
assert_type(block, list[bpf.BlockPart])
assert_type(bpf.ARG(0)[0], bpf.Instruction)
PolicyBuilder().add_policy_on_syscall("write", block)
PolicyBuilder().add_policy_on_syscalls(["write", "pwrite64"], block)
PolicyBuilder().add_policy_on_mmap([bpf.ARG_32(2), bpf.JEQ32(1, bpf.ALLOW), bpf.KILL])
labelled = [bpf.ARG_32(0), bpf.JEQ32(1, bpf.JUMP("out")), bpf.KILL, bpf.LABEL("out"), bpf.ALLOW]
PolicyBuilder().add_policy_on_syscall("write", labelled)
PolicyBuilder().add_policy_on_syscall("write", (bpf.ARG(0), bpf.JNE(1, bpf.KILL), bpf.ALLOW))
PolicyBuilder().add_policy_on_syscall("write", [bpf.ARG(0), [bpf.JEQ(1, bpf.ALLOW)], bpf.KILL])


def on_write(fd: int) -> bpf.Block:
    return [bpf.ARG(0), bpf.JEQ(fd, bpf.ALLOW), bpf.ERRNO(errno.EBADF)]


annotated: bpf.Block = [bpf.ARG_32(0), bpf.JGE32(3, bpf.KILL), bpf.TRACE(1)]
PolicyBuilder().add_policy_on_syscall("write", on_write(1)).add_policy_on_syscall(1, annotated)
assert_type(bpf.evaluate(policy, "write", (1,)), bpf.Instruction)


# --- README prose --------------------------------------------------------------------------


async def prose(executor: Executor, policy: Policy, path: str) -> None:
    PolicyBuilder().allow_dynamic_startup().add_libraries_for_binary(path)
    PolicyBuilder().allow_python().allow_comms()
    result = await Sandbox(executor, policy).run()
    if result.status is Status.VIOLATION and result.violation is not None:
        violation: Violation = result.violation
        print(violation.syscall_name, violation.syscall_nr, violation.args, violation.arch)
        print(violation.pid, violation.description)
    limit: str | None = result.limit_exceeded
    truncated: bool = result.output_truncated
    print(limit, truncated, executor.limits.output_limit)
    limits: Limits = executor.limits
    print(limits)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(Sandbox(executor, policy).run)
    await asyncio.gather(Sandbox(executor, policy).run(), Sandbox(executor, policy).run())

    buffer = Buffer.create(4096)
    async with Sandbox(executor, policy) as sandbox:
        comms: Comms = sandbox.comms
        assert comms is executor.ipc.comms
        await comms.send_fd(buffer.fd)
        await comms.send_msg({"size": 4096})
        sandbox.kill()
        await sandbox.await_result()
    view: memoryview = buffer.view
    print(bytes(view[:4]))

    aiosandbox.policy.dump(policy, "policy.toml", limits=executor.limits)
    loaded: PolicyFile = aiosandbox.policy.load("policy.toml")
    assert loaded.policy == policy
    print(aiosandbox.bpf.evaluate(policy, "write", (1,)) == bpf.ALLOW)


def sandboxee() -> None:
    client = Client()
    client.comms.send_string("ready")
    client.sandbox_me_here()
    forking = ForkingClient()
    if forking.wait_and_fork() == 0:
        Client().sandbox_me_here()


# --- Errors that must stay errors ------------------------------------------------------


def errors(executor: Executor) -> None:
    _ = aiosandbox.Nope  # type: ignore[attr-defined]  # no module __getattr__ that returns Any
    PolicyBuilder().add_policy_on_syscall("write", ["ALLOW"])  # type: ignore[list-item]
    PolicyBuilder().add_policy_on_syscall("write", "ALLOW")  # type: ignore[arg-type]
    bpf.JEQ(1, bpf.ARG(0))  # type: ignore[arg-type]  # an action is one instruction or jump
    Sandbox(executor, PolicyBuilder())  # type: ignore[arg-type]  # a Policy, built


def not_yet_built() -> None:
    # SPEC.md names that are not built yet: when one arrives, its ignore becomes unused and
    # mypy fails here, so that the example above gets its line back.
    PolicyBuilder().allow_host("example.org", 443)  # type: ignore[attr-defined]
