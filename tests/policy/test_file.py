"""Policy files: a policy and its limits round-trip through TOML; bad files say where.

Round trips are checked on hand-written policies covering every kind of entry and on random
recipes (hypothesis); the BPF text form is checked against the assembler on random blocks.
One test runs a sandboxee under a policy loaded from a file.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiosandbox import Executor, Limits, Policy, PolicyBuilder, PolicyError, Sandbox, Status, bpf
from aiosandbox._policy import syscall_number
from aiosandbox._policy._bpf import (
    BPF_ALU,
    BPF_AND,
    BPF_JEQ,
    BPF_JGT,
    BPF_JMP,
    BPF_K,
    assemble,
    flatten,
)
from aiosandbox._policy._bpf_text import _decompile, parse_bpf, render_block
from aiosandbox._policy._toml_positions import Positions
from aiosandbox.policy import PolicyFile, dump, dumps, load, loads

from .._support import ROOT, Binaries

DOCS = ROOT / "docs" / "policy-files.md"

# --- a hand-written file -----------------------------------------------------------------

EXAMPLE = """\
# What the static test sandboxee needs, with getppid blocked.
version = 1
hostname = "box"

[[rule]]
helper = "allow_static_startup"

[[rule]]
helper = "allow_read"
[[rule]]
helper = "allow_write"
[[rule]]
helper = "allow_exit"
[[rule]]
helper = "allow_system_malloc"
[[rule]]
helper = "allow_time"

[[rule]]
helper = "allow_futex_op"
kwargs = { op = 0 }

[[rule]]
block = ["getppid"]
errno = "EACCES"

[[rule]]
syscalls = ["getpid", "gettid"]
bpf = [
    "LOAD_SYSCALL_NR",
    { code = 0x15, jt = 0, jf = 1, k = 39 },   # a raw JEQ: getpid
    "ALLOW",
    "ARG(0)",
    "JEQ(0xffffffffffffffff, JUMP(minus_one))",
    "ERRNO(ENOSYS)",
    "LABEL(minus_one)",
    "TRACE(7)",
]

[[mount]]
file = "/etc/hostname"
at = "/etc/name"

[[mount]]
tmpfs = "/tmp"
size = "1M"

[network]
allow = ["127.0.0.1/32:80", "[::1]:443"]

[limits]
rlimit_as = "unlimited"
rlimit_fsize = "64K"
wall_time_limit = 20
"""


def test_load_a_hand_written_file(tmp_path: Path) -> None:
    path = tmp_path / "example.toml"
    path.write_text(EXAMPLE)
    loaded = load(path)
    assert isinstance(loaded, PolicyFile)

    policy = loaded.policy
    assert bpf.evaluate(policy, "getppid") == bpf.ERRNO(errno.EACCES)
    assert bpf.evaluate(policy, "getpid") == bpf.ALLOW
    assert bpf.evaluate(policy, "gettid", (1,)) == bpf.ERRNO(errno.ENOSYS)
    assert bpf.evaluate(policy, "gettid", (-1,)) == bpf.TRACE(7)
    assert bpf.evaluate(policy, "futex", (0, 0)) == bpf.ALLOW
    assert bpf.evaluate(policy, "socket") == bpf.KILL
    assert policy.hostname == "box"
    assert [(m.source, m.target) for m in policy.mounts] == [
        ("/etc/hostname", "/etc/name"),
        (None, "/tmp"),
    ]
    assert policy.mounts[1].size == 1 << 20
    assert [(str(e.network), e.port) for e in policy.allowed_endpoints] == [
        ("127.0.0.1/32", 80),
        ("::1/128", 443),
    ]
    assert loaded.limits == Limits(rlimit_as=None, rlimit_fsize=64 << 10, wall_time_limit=20)

    # The same policy, written with the builder.
    built = (
        PolicyBuilder()
        .allow_static_startup()
        .allow_read()
        .allow_write()
        .allow_exit()
        .allow_system_malloc()
        .allow_time()
        .allow_futex_op(0)
        .block_syscall_with_errno("getppid", errno.EACCES)
        .add_policy_on_syscalls(
            ["getpid", "gettid"],
            [
                bpf.LOAD_SYSCALL_NR,
                bpf.JEQ32(syscall_number("getpid"), bpf.ALLOW),
                bpf.ARG(0),
                bpf.JEQ(-1, bpf.JUMP("m1")),
                bpf.ERRNO(errno.ENOSYS),
                bpf.LABEL("m1"),
                bpf.TRACE(7),
            ],
        )
        .add_file_at("/etc/hostname", "/etc/name")
        .add_tmpfs("/tmp", size=1 << 20)
        .allow_ipv4("127.0.0.1/32", 80)
        .allow_ipv6("::1", 443)
        .set_hostname("box")
        .build()
    )
    assert policy == built


def test_loaded_file_without_limits_has_none() -> None:
    assert loads('[[rule]]\nallow = ["read"]\n').limits is None


def test_limits_keep_their_defaults_and_read_units() -> None:
    limits = loads('[limits]\nrlimit_core = "2MiB"\nrlimit_cpu = "unlimited"\n').limits
    assert limits == Limits(rlimit_core=2 << 20, rlimit_cpu=None)


async def test_a_sandboxee_runs_under_a_loaded_policy(binaries: Binaries, tmp_path: Path) -> None:
    path = tmp_path / "example.toml"
    path.write_text(EXAMPLE)
    loaded = load(path)
    executor = Executor(binaries.static, ["testcase", "syscall", str(syscall_number("getppid"))])
    assert loaded.limits is not None
    executor.limits = loaded.limits
    result = await Sandbox(executor, loaded.policy).run()
    assert result.status is Status.OK, str(result)
    assert result.exit_code == errno.EACCES  # the file's block rule


def test_every_example_in_the_docs_loads() -> None:
    examples = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert examples, "docs/policy-files.md has no toml example"
    for example in examples:
        loaded = loads(example, filename=str(DOCS))
        assert loads(dumps(loaded.policy, loaded.limits)) == loaded


# --- round trips of hand-written policies -------------------------------------------------


def every_kind_of_entry() -> PolicyBuilder:
    """A builder that uses every kind of call a file can hold."""
    return (
        PolicyBuilder()
        .allow_dynamic_startup()
        .allow_syscall("getpid")
        .allow_syscalls(["uname", syscall_number("gettid")])
        .add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW), bpf.KILL])
        .add_policy_on_syscalls(
            ["mmap", "mprotect"],
            [
                bpf.ARG_32(2),
                bpf.JA32(0x4, bpf.JUMP("exec")),
                bpf.JEQ32(0x1, bpf.JUMP("read_only")),
                bpf.ALLOW,
                bpf.LABEL("exec"),
                bpf.KILL,
                bpf.LABEL("read_only"),
                bpf.TRACE(0x1234),
            ],
        )
        .block_syscall_with_errno("link", errno.ENOENT)
        .block_syscalls_with_errno(["unlink", "rename"], errno.ENOENT)
        .block_syscalls_with_errno(["socket"], 4095)
        .allow_futex_op(0)
        .allow_tcgets()
        .default_action(bpf.ERRNO(errno.EPERM))
        .add_file("/etc/passwd")
        .add_file_at("/etc/hostname", "/inside/hostname", writable=True)
        .add_file_if_exists("/nonexistent/file")
        .add_directory("/usr/lib")
        .add_directory_at("/etc", "/host-etc")
        .add_directory_if_exists("/nonexistent/dir", writable=True)
        .add_directory("/proc")
        .add_tmpfs("/tmp", size=4 << 20)
        .add_tmpfs("/scratch", size=12345)
        .add_libraries_for_binary("/bin/ls")
        .allow_ipv4("127.0.0.1/32", 80)
        .allow_ipv4("10.0.0.0/255.0.0.0")
        .allow_ipv6("::1/128", 443)
        .allow_ipv6("2001:db8::/32")
        .set_hostname("round-trip")
    )


def test_every_kind_of_entry_round_trips(tmp_path: Path) -> None:
    policy = every_kind_of_entry().build()
    limits = Limits(rlimit_as=1 << 30, rlimit_cpu=None, wall_time_limit=2.5)
    dump(policy, tmp_path / "policy.toml", limits=limits)
    loaded = load(tmp_path / "policy.toml")
    assert loaded == PolicyFile(policy, limits)
    # Writing what was read gives the same text: a file is stable under load and dump.
    assert dumps(loaded.policy, loaded.limits) == (tmp_path / "policy.toml").read_text()


def test_namespaces_and_networking_round_trip() -> None:
    for builder in (
        PolicyBuilder().allow_exit().disable_namespaces(),
        PolicyBuilder().allow_exit().allow_unrestricted_networking(),
        PolicyBuilder().danger_default_allow_all(),
        PolicyBuilder(arch="aarch64").allow_syscalls(["openat", "read"]),
        PolicyBuilder(),
    ):
        policy = builder.build()
        assert loads(dumps(policy)).policy == policy


def test_helpers_that_add_mounts_keep_their_place() -> None:
    # allow_python mounts the interpreter and its libraries: between the two other mounts.
    policy = (
        PolicyBuilder()
        .add_tmpfs("/tmp", size=1 << 20)
        .allow_python()
        .add_file("/etc/passwd")
        .add_policy_on_mmap([bpf.ARG_32(2), bpf.JEQ32(1, bpf.ALLOW), bpf.KILL])
        .build()
    )
    text = dumps(policy)
    assert text.index("tmpfs =") < text.index('helper = "allow_python"') < text.index("passwd")
    assert 'helper = "add_policy_on_mmap"\nbpf = [\n    "ARG_32(2)",' in text
    assert loads(text).policy == policy


def test_rules_and_mounts_are_replayed_in_file_order() -> None:
    # allow_restartable_sequences mounts /proc and /sys/devices/system/cpu itself.
    text = """\
[[mount]]
directory = "/sys/devices/system/cpu"

[[rule]]
helper = "allow_restartable_sequences"

[[mount]]
tmpfs = "/tmp"
size = "1M"
"""
    targets = [mount.target for mount in loads(text).policy.mounts]
    assert targets == ["/sys/devices/system/cpu", "/proc", "/tmp"]


def test_written_file_reads_like_the_builder_calls() -> None:
    text = dumps(every_kind_of_entry().build(), Limits())
    summary = "# Allow what a dynamically linked binary's loader does before main"
    assert f'{summary}\nhelper = "allow_dynamic_startup"\n' in text
    assert 'helper = "allow_tcgets"  # Allow ioctl(fd, TCGETS, ...), which isatty uses\n' in text
    gettid = syscall_number("gettid")
    assert f'allow = ["getpid", "uname", {gettid}]' in text  # two calls, one list
    assert 'block = ["link", "unlink", "rename"]\nerrno = "ENOENT"' in text
    assert 'block = ["socket"]\nerrno = 4095' in text
    assert 'default_action = "ERRNO(EPERM)"' in text
    assert '"JEQ(1, ALLOW)",' in text
    assert re.search(r'"JA32\(4, JUMP\((L\d+)\)\)",.*\n(?:.*\n)*?\s+"LABEL\(\1\)",', text)
    assert "# 008: ALLOW" in text  # the disassembly as comments
    assert '[[mount]]\nfile = "/etc/hostname"\nat = "/inside/hostname"\nwritable = true' in text
    assert '[[mount]]\ndirectory = "/nonexistent/dir"\nwritable = true\nif_exists = true' in text
    assert "size = 4194304  # 4 MiB" in text
    endpoints = '"127.0.0.1/32:80", "10.0.0.0/255.0.0.0", "[::1/128]:443", "2001:db8::/32"'
    assert f"[network]\nallow = [{endpoints}]" in text
    assert 'rlimit_as = "unlimited"' in text


def test_paths_with_quotes_escapes_and_unicode_round_trip(tmp_path: Path) -> None:
    name = 'a "quoted" back\\slash\ttab\nnewline \x7f é ✓'
    (tmp_path / name).write_text("x")
    policy = PolicyBuilder().add_file_at(str(tmp_path / name), "/data").build()
    text = dumps(policy)
    assert "\\n" in text and '\\"quoted\\"' in text
    assert loads(text).policy == policy


def test_a_path_that_is_not_unicode_is_refused(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"not-utf8-\xff")
    with open(raw, "w"):
        pass
    policy = PolicyBuilder().add_file(os.fsdecode(raw)).build()
    with pytest.raises(PolicyError, match="not valid Unicode"):
        dumps(policy)


def test_a_policy_not_made_by_a_builder_is_refused() -> None:
    with pytest.raises(PolicyError, match="replaying its recipe gives a different policy"):
        dumps(Policy(user_program=(bpf.ALLOW,)))


# --- BPF items ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ALLOW", bpf.ALLOW),
        ("KILL_PROCESS", bpf.KILL),
        ("ERRNO(ENOENT)", bpf.ERRNO(errno.ENOENT)),
        ("ERRNO('ENOENT')", bpf.ERRNO(errno.ENOENT)),
        ("ERRNO(2)", bpf.ERRNO(errno.ENOENT)),
        ("TRACE(0x10)", bpf.TRACE(16)),
        ("ARG(5)", bpf.ARG(5)),
        ("ARG_32(1)", bpf.ARG_32(1)),
        (" JEQ32( 0x1 | 0x4 , KILL ) ", bpf.JEQ32(5, bpf.KILL)),
        ("JGE(1 << 40, ERRNO(EPERM))", bpf.JGE(1 << 40, bpf.ERRNO(errno.EPERM))),
        ("JNE(-1, TRAP)", bpf.JNE(-1, bpf.TRAP)),
        ("JLT32(~0xff & 0xffff, JUMP(x))", bpf.JLT32(0xFF00, bpf.JUMP("x"))),
        ("LABEL(done)", bpf.LABEL("done")),
        ("LABEL('two words')", bpf.LABEL("two words")),
        ("JUMP(done)", bpf.JUMP("done")),
        ("insn(0x06, 0, 0, 0x7fff0000)", bpf.ALLOW),
        ("Instruction(0x06, 0, 0, 0x7fff0000)", bpf.ALLOW),  # as repr() shows it
        ("JEQ32(1, insn(0x06, 0, 0, 0x50001))", bpf.JEQ32(1, bpf.ERRNO(1))),
    ],
)
def test_bpf_items_are_the_macros(text: str, expected: object) -> None:
    assert parse_bpf(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('touch /tmp/pwned')", "unknown BPF macro"),
        ("open('/etc/passwd')", "unknown BPF macro 'open'"),
        ("ALLOW.code", "not a BPF macro"),
        ("ALLOW if 1 else KILL", "not a BPF macro"),
        ("[ALLOW, KILL]", "not a BPF macro"),
        ("lambda: ALLOW", "not a BPF macro"),
        ("ALOW", "did you mean ALLOW"),
        ("JEQ", "JEQ needs arguments"),
        ("JEQ(1)", r"JEQ\(\) takes 2 arguments, got 1"),
        ("JEQ(value=1, action=ALLOW)", "no keyword arguments"),
        ("JEQ(*[1, ALLOW])", "takes 2 arguments"),
        ("JEQ(1, ARG(0))", "a comparison's action is"),
        ("JEQ('1', ALLOW)", "expected a number"),
        ("JEQ(9**99, ALLOW)", "expected a number"),
        ("JEQ(1 << 1000, ALLOW)", "a shift by 1000"),
        ("JEQ((1 << 64) + 1, ALLOW)", "does not fit in 64 bits"),
        ("JEQ32(1 << 33, ALLOW)", "must fit in 32 bits"),
        ("ERRNO(ENOTANERRNO)", "unknown errno name"),
        ("ERRNO(1 << 16)", "an errno must be an int in 0..4095"),
        ("ARG(6)", "0..5"),
        ("LABEL(1)", "a label is a name"),
        ("insn(1, 2, 3)", "takes 4 arguments"),
        ("insn(0x06, 256, 0, 0)", "jump offsets must be 0..255"),
        ("ALLOW KILL", "not a BPF expression"),
        ("A" * 501, "one macro"),
        ("\0", "not a BPF expression"),
    ],
)
def test_bpf_items_that_are_not_macros_are_refused(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_bpf(text)


def test_a_jump_into_the_middle_of_a_macro_reads_back() -> None:
    # Every macro fills a fixed number of slots, so a hand-made jump that lands inside
    # JEQ's expansion still lands there after the block is written as macros.
    block = [
        bpf.ARG(0),
        bpf.Instruction(BPF_JMP | BPF_JEQ | BPF_K, 2, 0, 0),  # to JEQ's low-half test
        bpf.JEQ(7, bpf.ALLOW),
        bpf.KILL,
    ]
    policy = PolicyBuilder().add_policy_on_syscall("write", block).build()
    text = dumps(policy)
    assert '"insn(0x15, 2, 0, 0x0)",' in text
    assert '"JEQ(7, ALLOW)",' in text
    assert loads(text).policy == policy


@st.composite
def blocks(draw: st.DrawFn, raw: bool = True) -> list[object]:
    """Random blocks the assembler accepts: labels placed between chunks, jumps only to later
    labels, ARG before its 64-bit comparisons, an action at the end; plus raw instructions,
    some of which jump into the middle of macros."""
    n_labels = draw(st.integers(0, 3))
    labels = [f"l{i}" for i in range(n_labels)]
    verdicts = (
        st.sampled_from([bpf.ALLOW, bpf.KILL, bpf.KILL_THREAD, bpf.TRAP, bpf.LOG, bpf.USER_NOTIF])
        | st.builds(bpf.ERRNO, st.integers(0, 4095))
        | st.builds(bpf.TRACE, st.integers(0, 0xFFFF))
    )
    u64 = st.integers(0, (1 << 64) - 1) | st.sampled_from([0, 1, 2, 0xFFFFFFFF, 1 << 32])
    u32 = st.integers(0, (1 << 32) - 1) | st.sampled_from([0, 1, 0x5401])
    wide = st.sampled_from([bpf.JEQ, bpf.JNE, bpf.JGT, bpf.JGE, bpf.JLT, bpf.JLE, bpf.JA])
    narrow = st.sampled_from(
        [bpf.JEQ32, bpf.JNE32, bpf.JGT32, bpf.JGE32, bpf.JLT32, bpf.JLE32, bpf.JA32]
    )
    block: list[object] = []
    for chunk in range(n_labels + 1):
        later = labels[chunk:]
        actions = (
            verdicts | st.sampled_from([bpf.JUMP(name) for name in later]) if later else verdicts
        )
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.integers(0, 5 if raw else 3))
            if kind == 0:
                compare = [
                    draw(wide)(draw(u64), draw(actions)) for _ in range(draw(st.integers(0, 2)))
                ]
                block += [bpf.ARG(draw(st.integers(0, 5))), *compare]
            elif kind == 1:
                block += [
                    bpf.ARG_32(draw(st.integers(0, 5))),
                    draw(narrow)(draw(u32), draw(actions)),
                ]
            elif kind == 2:
                block.append(draw(actions))
            elif kind == 3:
                block.append(draw(st.sampled_from([bpf.LOAD_SYSCALL_NR, bpf.LOAD_ARCH])))
            elif kind == 4:
                block.append(bpf.Instruction(BPF_ALU | BPF_AND | BPF_K, 0, 0, draw(u32)))
            else:
                code = BPF_JMP | draw(st.sampled_from([BPF_JEQ, BPF_JGT])) | BPF_K
                jt, jf = draw(st.integers(0, 3)), draw(st.integers(0, 3))
                block.append(bpf.Instruction(code, jt, jf, draw(u32)))
        if chunk < n_labels:
            block.append(bpf.LABEL(labels[chunk]))
    block.append(draw(verdicts))
    return block


@settings(max_examples=100, deadline=None)
@given(blocks())
def test_written_bpf_reads_back_to_the_same_instructions(block: list[object]) -> None:
    assembled = assemble(block)
    # The decompiler itself, not render_block's raw fallback, must be exact.
    items = _decompile(assembled)
    assert sum(size for _, size in items) == len(assembled)
    assert assemble([parse_bpf(text) for text, _ in items]) == assembled
    assert render_block(assembled) == items


@settings(max_examples=60, deadline=None)
@given(blocks(raw=False))
def test_a_block_of_macros_is_written_as_those_macros(block: list[object]) -> None:
    assembled = assemble(block)
    items = render_block(assembled)
    assert assemble([parse_bpf(text) for text, _ in items]) == assembled
    # One element per macro, label and action, each standing for the same slots.
    assert len(items) == len(block)
    for (text, _), item in zip(items, block, strict=True):
        parsed = parse_bpf(text)
        if isinstance(item, bpf.Label | bpf.Jump):
            # Renamed after their slot; a JUMP to the next slot reads as the LABEL it
            # assembles alike to.
            assert isinstance(parsed, bpf.Label | bpf.Jump)
        else:  # the same macro; where its JUMP goes is checked by assembling, above
            assert _unnamed(parsed) == _unnamed(item), text


def _unnamed(item: object) -> list[object]:
    return [None if isinstance(x, bpf.Jump) else x for x in flatten(item)]


# --- random recipes -------------------------------------------------------------------------

SYSCALLS = ["read", "write", "getpid", "uname", "open", "openat", "close", "mmap", 39, 1000]
HELPERS = [
    "allow_static_startup",
    "allow_dynamic_startup",
    "allow_read",
    "allow_write",
    "allow_exit",
    "allow_system_malloc",
    "allow_time",
    "allow_safe_fcntl",
    "allow_tcgets",
    "allow_get_random",
    "allow_mmap_without_exec",
    "allow_handle_signals",
    "allow_fork",
    "danger_default_allow_all",
    "allow_unrestricted_networking",
    "disable_namespaces",
    "allow_restartable_sequences",  # adds mounts too
]
FILES = ["/etc/passwd", "/etc/hostname", "/bin/true", "/nonexistent"]
INSIDE = ["/a", "/b/c", "/tmp", "/etc/passwd", "/x y"]
ERRNOS = [0, 1, errno.ENOENT, errno.EACCES, errno.ENOSYS, 4095, 4096]
ACTIONS = [bpf.ALLOW, bpf.KILL, bpf.ERRNO(1), bpf.TRACE(3), bpf.TRAP, bpf.LOG, bpf.KILL_THREAD]

syscall_lists = st.lists(st.sampled_from(SYSCALLS), max_size=4)
calls = st.one_of(
    st.tuples(st.just("allow_syscall"), st.tuples(st.sampled_from(SYSCALLS))),
    st.tuples(st.just("allow_syscalls"), st.tuples(syscall_lists)),
    st.tuples(
        st.just("block_syscall_with_errno"),
        st.tuples(st.sampled_from(SYSCALLS), st.sampled_from(ERRNOS)),
    ),
    st.tuples(
        st.just("block_syscalls_with_errno"), st.tuples(syscall_lists, st.sampled_from(ERRNOS))
    ),
    st.tuples(st.just("add_policy_on_syscalls"), st.tuples(syscall_lists, blocks())),
    st.tuples(st.just("add_policy_on_mmap"), st.tuples(blocks())),
    st.tuples(st.just("allow_futex_op"), st.tuples(st.integers(0, 300))),
    st.tuples(st.just("default_action"), st.tuples(st.sampled_from(ACTIONS))),
    st.tuples(st.sampled_from(HELPERS), st.just(())),
    st.tuples(
        st.just("set_hostname"), st.tuples(st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True))
    ),
    st.tuples(
        st.sampled_from(["add_file", "add_file_if_exists"]),
        st.tuples(st.sampled_from(FILES), st.booleans()),
    ),
    st.tuples(
        st.just("add_file_at"),
        st.tuples(st.sampled_from(FILES), st.sampled_from(INSIDE), st.booleans()),
    ),
    st.tuples(
        st.sampled_from(["add_directory", "add_directory_if_exists"]),
        st.tuples(st.sampled_from(["/usr/lib", "/etc", "/proc", "/nonexistent"]), st.booleans()),
    ),
    st.tuples(st.just("add_tmpfs"), st.tuples(st.sampled_from(INSIDE), st.integers(1, 1 << 40))),
    st.tuples(st.just("add_libraries_for_binary"), st.tuples(st.sampled_from(["/bin/true"]))),
    st.tuples(
        st.just("allow_ipv4"),
        st.tuples(
            st.sampled_from(["127.0.0.1", "10.0.0.0/8", "10.1.0.0/255.255.0.0"]),
            st.integers(0, 65535),
        ),
    ),
    st.tuples(
        st.just("allow_ipv6"),
        st.tuples(
            st.sampled_from(["::1", "2001:db8::/32", "::ffff:1.2.3.4"]), st.integers(0, 65535)
        ),
    ),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(calls, max_size=10))
def test_random_recipes_round_trip(recipe: list[tuple[str, tuple[object, ...]]]) -> None:
    builder = PolicyBuilder()
    for method, args in recipe:
        try:
            getattr(builder, method)(*args)
        except PolicyError:
            pass  # a call the builder refuses is not in the recipe
    try:
        policy = builder.build()
    except PolicyError:
        return  # contradictory rules, a missing file: nothing to write
    text = dumps(policy)
    again = loads(text)
    assert again.policy == policy
    assert dumps(again.policy) == text
    # Errors would be placed right: each table is found at its header.
    positions = Positions(text)
    for kind in ("rule", "mount"):
        headers = [n for n, line in enumerate(text.splitlines(), 1) if line == f"[[{kind}]]"]
        assert [positions.line((kind, i)) for i in range(len(headers))] == headers


# --- errors and their lines -----------------------------------------------------------------

ERRORS = [
    ("syntax", 'version = 1\nhostname = "unterminated\n', 2, "column"),
    ("syntax at the end", "[[rule]]\nallow = [\n", 3, "at the end of the file"),
    ("unknown top-level key", "version = 1\n\n[sandbox]\nx = 1\n", 3, "unknown key 'sandbox'"),
    (
        "unknown key in a rule",
        '[[rule]]\nallow = ["read"]\n\n[[rule]]\nallow = ["write"]\nerrno = 1\n',
        6,
        "unknown key 'errno' in \\[rule\\]",
    ),
    (
        "unknown syscall in a long list",
        '[[rule]]\nallow = [\n  "read",  # ok\n  "reed",\n]\n',
        4,
        "unknown syscall 'reed'",
    ),
    ("syscall number too large", "[[rule]]\nallow = [0x100000000]\n", 2, "fit in 32 bits"),
    (
        "unknown helper",
        '[[rule]]\nhelper = "allow_read"\n[[rule]]\nhelper = "allow_reed"\n',
        4,
        "unknown builder method 'allow_reed'; did you mean allow_read",
    ),
    ("a builder method files may not call", '[[rule]]\nhelper = "build"\n', 2, "may call"),
    ("a private method", '[[rule]]\nhelper = "_decide"\nargs = [1]\n', 2, "may call"),
    ("a dunder", '[[rule]]\nhelper = "__init__"\n', 2, "may call"),
    (
        "helper with wrong arguments",
        '[[rule]]\nhelper = "allow_futex_op"\nargs = [1, 2]\n',
        2,
        "too many positional",
    ),
    ("helper args type", '[[rule]]\nhelper = "allow_read"\nargs = 1\n', 3, "must be an array"),
    (
        "two kinds of rule",
        '\n[[rule]]\nallow = ["read"]\nblock = ["write"]\n',
        2,
        "exactly one of helper, allow, block, syscalls; it has allow and block",
    ),
    ("a rule with no kind", "[[rule]]\nerrno = 1\n", 1, "it has errno"),
    ("block without errno", '[[rule]]\nblock = ["open"]\n', 1, "needs an errno"),
    ("unknown errno", '[[rule]]\nblock = ["open"]\nerrno = "ENOENTT"\n', 3, "did you mean ENOENT"),
    ("errno out of range", '[[rule]]\nblock = ["open"]\nerrno = 70000\n', 2, "0..4095"),
    (
        "bad bpf item",
        '[[rule]]\nsyscalls = ["write"]\nbpf = [\n  "ARG(0)",\n  "JEQ(1, ALOW)",\n  "KILL",\n]\n',
        5,
        "unknown BPF name 'ALOW'; did you mean ALLOW",
    ),
    (
        "bpf block that falls off its end",
        '[[rule]]\nsyscalls = ["write"]\nbpf = ["ARG(0)", "JEQ(1, ALLOW)"]\n',
        3,
        "fall off its end",
    ),
    (
        "raw bpf table with a bad key",
        '[[rule]]\nsyscalls = ["write"]\nbpf = [\n  {code = 6, k = 0, kk = 1},\n]\n',
        4,
        "unknown key 'kk'",
    ),
    (
        "bpf for ptrace",
        '[[rule]]\nsyscalls = ["ptrace"]\nbpf = ["ALLOW"]\n',
        3,
        "cannot add a policy for the ptrace syscall",
    ),
    ("wrong type", '[[mount]]\nfile = "/etc/passwd"\nwritable = "yes"\n', 3, "must be a boolean"),
    ("relative path", '[[mount]]\nfile = "etc/passwd"\n', 1, "must be absolute"),
    ("if_exists with at", '[[mount]]\nfile = "/a"\nat = "/b"\nif_exists = true\n', 4, "with at"),
    ("tmpfs without size", '[[mount]]\ntmpfs = "/tmp"\n', 1, "needs a size"),
    ("bad size", '[[mount]]\ntmpfs = "/tmp"\nsize = "4MB"\n', 3, "must be bytes"),
    (
        "missing file, found when building",
        '[[mount]]\ntmpfs = "/tmp"\nsize = "1M"\n\n[[mount]]\nfile = "/nonexistent/x"\n',
        5,
        "does not exist",
    ),
    (
        "contradictory rules, found when building",
        '[[rule]]\nallow = ["open"]\n[[rule]]\nhelper = "allow_read"\n'
        '[[rule]]\nblock = [\n  "open",\n]\nerrno = 1\n',
        6,
        "contradictory rules for syscall 'open'",
    ),
    (
        "hostname without a network namespace",
        '\nhostname = "box"\n[network]\nunrestricted = true\n',
        2,
        "without a network namespace",
    ),
    (
        "mount after namespaces = false",
        'namespaces = false\n[[mount]]\ndirectory = "/usr"\n',
        2,
        "needs namespaces",
    ),
    (
        "bad CIDR",
        '[network]\nallow = [\n  "127.0.0.1",\n  "127.0.0.1/33:80",\n]\n',
        4,
        "not a correct CIDR",
    ),
    ("bad port", '[network]\nallow = ["127.0.0.1:http"]\n', 2, "a port is written"),
    ("port out of range", '[network]\nallow = ["[::1]:99999"]\n', 2, "0..65535"),
    (
        "unknown network key",
        "[network]\nunrestricted = true\nallowed = []\n",
        3,
        "did you mean 'allow'",
    ),
    ("unknown arch", '\narch = "sparc"\n', 2, "unknown architecture"),
    (
        "syscall unknown on the file's arch",
        'arch = "aarch64"\n[[rule]]\nallow = ["open"]\n',
        3,
        "unknown syscall 'open' on aarch64",
    ),
    ("version", "version = 2\n", 1, "unsupported version 2"),
    ("default_action not a verdict", 'default_action = "ARG(0)"\n', 1, "is a verdict"),
    ("limits value", "[limits]\nrlimit_cpu = 1\nrlimit_as = -1\n", 3, "must be >= 0"),
    ("limits type", '[limits]\nwall_time_limit = "soon"\n', 2, 'or "unlimited"'),
    ("unknown limit", "[limits]\nrlimit_nproc = 1\n", 2, "unknown key 'rlimit_nproc'"),
    (
        "rules written inline",
        'rule = [\n {allow = ["read"]},\n {allow = ["nope"]},\n]\n',
        3,
        "'nope'",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_errors_name_the_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(PolicyError, match=f"^policy.toml:{line}: .*{message}"):
        loads(text, filename="policy.toml")


def test_load_names_the_path_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('\n[[rule]]\nhelper = "allow_nothing"\n')
    with pytest.raises(PolicyError, match=f"^{re.escape(str(path))}:3: unknown builder method"):
        load(path)
    path.write_bytes(b"hostname = '\xff'\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load(path)


def test_positions_follow_strings_arrays_and_inline_tables() -> None:
    lines = [
        'top = """a multi-line string',
        "[[rule]]",
        'allow = ["not a key"]',
        '"""  # the header above is text',
        "[[rule]]",
        'kwargs = { a = 1, "quoted key" = [',
        "]}",
        "bpf = [  # a comment with [[rule]]",
        """    'single', "double \\" quote",""",
        '    """multi',
        'line""", {code = 1},',
        "]",
        "",
        "[[rule]]",
        "allow = ['''x",
        "y''', 'z']",
        "[network]",
        "allow = []",
    ]
    text = "\n".join(lines) + "\n"
    positions = Positions(text)
    assert positions.line(("top",)) == 1
    assert positions.line(("rule", 0)) == 5
    assert positions.line(("rule", 0, "kwargs", "quoted key")) == 6
    assert positions.line(("rule", 0, "bpf")) == 8
    assert positions.line(("rule", 0, "bpf", 1)) == 9
    assert positions.line(("rule", 0, "bpf", 2)) == 10
    assert positions.line(("rule", 0, "bpf", 3, "code")) == 11
    assert positions.line(("rule", 1)) == 14
    assert positions.line(("rule", 1, "allow", 1)) == 16
    assert positions.line(("rule", 1, "allow", 7)) == 15  # the enclosing key
    assert positions.line(("network", "allow")) == 18
    assert positions.line(("rule", 2)) == 5  # no such table: the first [[rule]]
    assert positions.line(("nothing",)) is None
