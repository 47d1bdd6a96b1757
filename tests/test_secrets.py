"""exporter.secrets: one reader for every password and token, from a variable or a file, never logged."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.secrets import EMPTY, UNREADABLE, UNSET, SecretUnavailable, bearer_header, read_secret


def test_the_variable_wins_over_the_file_and_blank_means_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    monkeypatch.setenv("PW", "  from-env \n")
    assert read_secret("password", "PW", str(secret)) == "from-env"
    monkeypatch.setenv("PW", "   ")  # a blank variable does not shadow the file
    assert read_secret("password", "PW", str(secret)) == "from-file"
    monkeypatch.delenv("PW")
    assert read_secret("password", "PW", str(secret)) == "from-file"


def test_a_rotated_file_is_read_again(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("one")
    assert read_secret("token", None, str(secret)) == "one"
    secret.write_text("two\n")
    assert read_secret("token", None, str(secret)) == "two"


@pytest.mark.parametrize(
    ("content", "reason", "says"),
    [
        (None, UNREADABLE, "No such file or directory"),
        (b"", EMPTY, "is empty"),
        (b" \n\t\n", EMPTY, "is empty"),
        (b"\xff\xfesecret", UNREADABLE, "not UTF-8 text"),
    ],
)
def test_a_bad_file_is_a_reason_naming_the_file_never_a_value(
    tmp_path: Path, content: bytes | None, reason: str, says: str
) -> None:
    secret = tmp_path / "pw"
    if content is not None:
        secret.write_bytes(content)
    with pytest.raises(SecretUnavailable) as info:
        read_secret("password", "NO_SUCH_VARIABLE_SET", str(secret))
    assert info.value.reason == reason
    assert str(secret) in str(info.value) and says in str(info.value)
    assert "secret" not in str(info.value).replace(str(tmp_path), "")


def test_neither_variable_nor_file_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BMC_PW", raising=False)
    with pytest.raises(SecretUnavailable) as info:
        read_secret("password", "BMC_PW", None)
    assert info.value.reason == UNSET
    assert str(info.value) == "no password: set BMC_PW or give a password file"


def test_bearer_header_from_a_file_and_none_without_one(tmp_path: Path) -> None:
    token = tmp_path / "token"
    assert bearer_header(None) == {}
    assert bearer_header(str(token)) == {}  # a default path outside a pod: no token at all
    token.write_text("abc.def\n")
    assert bearer_header(str(token)) == {"Authorization": "Bearer abc.def"}
    token.write_text("")
    with pytest.raises(SecretUnavailable):  # never "Bearer " with nothing after it
        bearer_header(str(token))
