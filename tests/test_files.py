"""The one rule for reading a file the user named: regular, bounded, one-line errors."""

from __future__ import annotations

import os

import pytest

from seesr.errors import ConfigError, InputError
from seesr.io.files import checked_file, read_bytes, read_text


def test_regular_file_is_read(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("héllo")
    assert checked_file(path, "input", 100, InputError) == len("héllo".encode())
    assert read_text(path, "input", 100, InputError) == "héllo"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: os.mkfifo(p), "is a pipe (FIFO), not a file"),
        (lambda p: p.mkdir(), "is a folder, not a file"),
        (lambda p: p.symlink_to("/dev/zero"), "is a device, not a file"),
        (lambda p: p.symlink_to(p), "is a symbolic link loop"),
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"x" * 11), "over the 10 bytes limit"),
    ],
    ids=["fifo", "folder", "device", "loop", "missing", "too-big"],
)
def test_what_is_not_a_small_regular_file_is_one_line(tmp_path, make, words):
    path = tmp_path / "thing"
    make(path)
    with pytest.raises(ConfigError) as raised:
        read_bytes(path, "config file", 10, ConfigError)
    message = str(raised.value)
    assert words in message and message.startswith(f"config file {path}") and "\n" not in message


def test_non_utf8_text_names_the_byte(tmp_path):
    path = tmp_path / "sources.txt"
    path.write_bytes(b"ok\n\xff")
    with pytest.raises(InputError, match=r"sources\.txt is not UTF-8 text \(byte 3\)"):
        read_text(path, "sources list", 100, InputError)
