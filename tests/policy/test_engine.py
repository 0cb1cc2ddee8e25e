"""The policy package's parts: the rule engine, the catalogue's table, the façade's registry.

The builder's behaviour is tested through PolicyBuilder elsewhere (test_builder.py,
test_helpers.py); these tests pin how the façade is made from its parts.
"""

from __future__ import annotations

import errno
import inspect

import pytest

from aiosandbox import PolicyBuilder, PolicyError, bpf
from aiosandbox import policy as policy_file
from aiosandbox._policy import Arch
from aiosandbox._policy._arch import syscall_number_or_none
from aiosandbox._policy._builder import RECORDED_METHODS
from aiosandbox._policy._catalogue import PLAIN_GROUPS
from aiosandbox._policy._engine import Engine
from aiosandbox._policy._policy import BuilderCall

pytestmark = pytest.mark.pure


def _public_methods() -> set[str]:
    return {name for name in dir(PolicyBuilder) if not name.startswith("_")}


def test_the_registry_is_every_public_method_but_build_and_copy() -> None:
    assert _public_methods() - {"build", "copy"} == RECORDED_METHODS
    assert len(RECORDED_METHODS) == 103


def test_every_method_has_its_own_name_and_returns_the_builder() -> None:
    for name in _public_methods():
        method = getattr(PolicyBuilder, name)
        assert method.__name__ == name
        assert method.__qualname__ == f"PolicyBuilder.{name}"
        assert inspect.getdoc(method), name
        signature = inspect.signature(method)
        assert next(iter(signature.parameters)) == "self", name
        if name in RECORDED_METHODS:
            assert signature.return_annotation == "Self", name


@pytest.mark.parametrize("arch", list(Arch))
@pytest.mark.parametrize("name", sorted(PLAIN_GROUPS))
def test_a_plain_group_allows_exactly_its_table_row(name: str, arch: Arch) -> None:
    group = PLAIN_GROUPS[name]
    method = getattr(PolicyBuilder, name)
    assert inspect.getdoc(method) == inspect.cleandoc(group.doc)
    assert list(inspect.signature(method).parameters) == ["self"]
    policy = getattr(PolicyBuilder(arch=arch), name)().build()
    expected = [syscall_number_or_none(s, arch) for s in group.syscalls]
    assert policy.rule_syscalls == tuple(dict.fromkeys(nr for nr in expected if nr is not None))
    for nr in policy.rule_syscalls:
        assert bpf.evaluate(policy, nr, arch=arch.label) == bpf.ALLOW


def test_a_file_calls_only_what_the_registry_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    # A public method with a helper's prefix is not callable from a file by its name alone.
    monkeypatch.setattr(PolicyBuilder, "allow_everything", lambda self: self, raising=False)
    with pytest.raises(PolicyError, match=r"<string>:2: 'allow_everything' is not a builder"):
        policy_file.loads('[[rule]]\nhelper = "allow_everything"\n')
    loaded = policy_file.loads('[[rule]]\nhelper = "allow_comms"\n')
    assert loaded.policy == PolicyBuilder().allow_comms().build()


def test_the_engine_names_both_calls_of_a_conflict() -> None:
    engine = Engine(Arch.X86_64)
    read = engine.nr("read")
    assert engine.decide(read, bpf.ALLOW)
    engine.record(BuilderCall("allow_read", ()))
    assert not engine.decide(read, bpf.ALLOW)  # the same decision again: nothing
    engine.record(BuilderCall("allow_syscall", ("read",)))
    assert not engine.decide(read, bpf.ERRNO(errno.EPERM))  # not recorded: the call failed
    with pytest.raises(PolicyError) as raised:
        engine.build()
    assert str(raised.value) == (
        "contradictory rules for syscall 'read': allowed by allow_read(), but blocked"
        " with EPERM (1) by a call that failed"
    )


def test_an_errno_before_a_helper_block_makes_its_grant_dead() -> None:
    engine = Engine(Arch.X86_64)
    engine.block_with_errno(["ioctl"], errno.ENOTTY)
    engine.record(BuilderCall("block_syscalls_with_errno", (("ioctl",), errno.ENOTTY)))
    engine.helper_block(["ioctl"], [bpf.ARG_32(1), bpf.JEQ32(0x5401, bpf.ALLOW)])
    engine.record(BuilderCall("allow_tcgets", ()))
    with pytest.raises(PolicyError, match=r"blocked with ENOTTY \(25\) by block_syscalls_with"):
        engine.build()


def test_overridable_rules_follow_user_rules_and_vanish_with_a_default() -> None:
    engine = Engine(Arch.X86_64)
    engine.overridable_errno(["readlink"], errno.ENOENT)
    engine.decide(engine.nr("readlink"), bpf.ALLOW)
    assert bpf.evaluate(engine.build(), "readlink", arch="x86_64") == bpf.ALLOW
    fresh = Engine(Arch.X86_64)
    fresh.overridable_errno(["readlink"], errno.ENOENT)
    assert bpf.evaluate(fresh.build(), "readlink", arch="x86_64") == bpf.ERRNO(errno.ENOENT)
    fresh.set_default(bpf.ERRNO(errno.EPERM))
    assert bpf.evaluate(fresh.build(), "readlink", arch="x86_64") == bpf.ERRNO(errno.EPERM)


def test_an_engine_copy_is_independent() -> None:
    engine = Engine(Arch.X86_64)
    engine.allow_names("read")
    copy = engine.copy()
    copy.allow_names("write")
    copy.endpoints.append(PolicyBuilder().allow_ipv4("10.0.0.1").build().allowed_endpoints[0])
    assert engine.build().rule_syscalls == (engine.nr("read"),)
    assert engine.build().allowed_endpoints == ()
    assert len(copy.build().rule_syscalls) == 2
