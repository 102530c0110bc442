"""hd_shell.errors: what a nursery wrapped, found again; hosts as URLs write them."""

from __future__ import annotations

from hd_shell.errors import find, url_host


def test_find_looks_through_nested_groups_depth_first() -> None:
    inner = OSError(98, "in use")
    group = BaseExceptionGroup("outer", [ValueError("x"), ExceptionGroup("g", [inner])])
    assert find(group, OSError) is inner
    assert find(group, KeyError) is None
    assert find(KeyboardInterrupt(), KeyboardInterrupt) is not None


def test_alone_only_goes_through_groups_of_one() -> None:
    inner = OSError(98, "in use")
    assert find(ExceptionGroup("g", [ExceptionGroup("h", [inner])]), OSError,
                alone=True) is inner
    assert find(ExceptionGroup("g", [inner, ValueError()]), OSError, alone=True) is None
    assert find(ExceptionGroup("g", [inner, ValueError()]), OSError) is inner


def test_url_host_brackets_ipv6_once() -> None:
    assert url_host("::1") == "[::1]"
    assert url_host("[::1]") == "[::1]"
    assert url_host("127.0.0.1") == "127.0.0.1"
    assert url_host("example.org") == "example.org"
