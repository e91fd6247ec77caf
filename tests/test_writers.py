"""Writers: only regular files are replaced (devices, FIFOs and sockets refused before
anything is written), symlinks are written through, read-only files refused, disk errors name
the path, and the temporary files of killed writes are removed at the next save."""

from __future__ import annotations

import errno
import os
import socket
import stat

import numpy as np
import pytest

import wframe as wf
from wframe.saving import writer
from wframe.saving.io import read_safetensors, write_safetensors

ARRAYS = {"a": np.arange(6.0), "b": np.ones((2, 2), np.float32)}


def _written(path, value):
    tensors, meta = read_safetensors(path)
    return meta.get("v") == value and np.array_equal(tensors["a"], ARRAYS["a"])


# ----------------------------------------------------------------------------- targets
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_before_anything_is_written(tmp_path):
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match=r"FIFO \(named pipe\).*choose another path") as e:
        write_safetensors(fifo, ARRAYS)
    assert e.value.errno == errno.EINVAL and e.value.filename == str(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(tmp_path) == ["w.safetensors"]


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null here")
def test_a_device_is_refused_before_it_is_touched(tmp_path):
    # The check happens before any temporary file is made or any folder read: /dev is not
    # written to (and only stat is called on /dev/null itself).
    before = os.stat("/dev/null")
    with pytest.raises(OSError, match="character device") as e:
        write_safetensors("/dev/null", ARRAYS)
    assert e.value.filename == "/dev/null"
    assert os.stat("/dev/null").st_ino == before.st_ino and stat.S_ISCHR(before.st_mode)
    # through a symlink too
    link = tmp_path / "null.safetensors"
    link.symlink_to("/dev/null")
    with pytest.raises(OSError, match="character device"):
        wf.Sequential([wf.layers.Dense(2)]).build((None, 3)).save_weights(link)
    assert os.path.islink(link)


def test_a_socket_is_refused(tmp_path):
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix sockets here")
    path = tmp_path / "s.safetensors"
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.bind(str(path))
        except OSError as e:  # a path too long for a socket address
            pytest.skip(f"cannot bind a socket here: {e}")
        with pytest.raises(OSError, match="a socket"):
            write_safetensors(path, ARRAYS)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_symlink_is_written_through_atomically(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "real" / "w.safetensors"
    write_safetensors(target, ARRAYS, {"v": "old"})
    target.chmod(0o640)
    link = tmp_path / "links" / "w.safetensors"
    link.symlink_to(target)
    write_safetensors(link, ARRAYS, {"v": "new"})
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert _written(target, "new") and stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert os.listdir(tmp_path / "links") == ["w.safetensors"]
    assert os.listdir(tmp_path / "real") == ["w.safetensors"]
    # a dangling link: its target is created; a chain of links: the final target is written
    dangling = tmp_path / "links" / "d.safetensors"
    dangling.symlink_to(tmp_path / "real" / "d.safetensors")
    write_safetensors(dangling, ARRAYS, {"v": "d"})
    assert os.path.islink(dangling) and _written(tmp_path / "real" / "d.safetensors", "d")
    chain = tmp_path / "links" / "c.safetensors"
    chain.symlink_to(link)
    write_safetensors(chain, ARRAYS, {"v": "chain"})
    assert os.path.islink(chain) and os.path.islink(link) and _written(target, "chain")
    loop = tmp_path / "links" / "loop.safetensors"
    loop.symlink_to(loop)
    with pytest.raises(OSError, match="loops"):
        write_safetensors(loop, ARRAYS)


def test_a_read_only_target_is_refused_and_kept(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors(path, ARRAYS, {"v": "old"})
    path.chmod(0o444)
    try:
        with pytest.raises(PermissionError, match=r"read-only \(mode 444\).*chmod u\+w") as e:
            write_safetensors(path, ARRAYS, {"v": "new"})
        assert e.value.filename == str(path)
        assert _written(path, "old") and os.listdir(tmp_path) == ["w.safetensors"]
    finally:
        path.chmod(0o644)
    write_safetensors(path, ARRAYS, {"v": "new"})  # writable again: replaced
    assert _written(path, "new")


# ----------------------------------------------------------------------------- disk errors
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT])
def test_disk_errors_name_the_path_and_keep_the_old_file(tmp_path, monkeypatch, code):
    path = tmp_path / "w.safetensors"
    write_safetensors(path, ARRAYS, {"v": "old"})
    real, calls = os.write, []

    def failing(fd, data):
        calls.append(len(data))
        if len(calls) == 2:  # the header went through; the data does not
            raise OSError(code, os.strerror(code))
        return real(fd, data)

    monkeypatch.setattr(writer.os, "write", failing)
    with pytest.raises(OSError) as e:
        write_safetensors(path, ARRAYS, {"v": "new"})
    monkeypatch.undo()
    assert e.value.errno == code and e.value.filename == str(path)
    assert os.strerror(code) in str(e.value) and "old one is unchanged" in str(e.value)
    assert isinstance(e.value.__cause__, OSError)
    assert _written(path, "old") and os.listdir(tmp_path) == ["w.safetensors"]


# ----------------------------------------------------------------------------- leftovers
def test_stale_temporary_files_of_the_same_target_are_removed(tmp_path):
    path = tmp_path / "w.safetensors"
    old = 1_000_000_000  # 2001: before this process started
    stale = [tmp_path / ".w.safetensors.ab12cd_9.tmp", tmp_path / ".w.safetensors.zzzzzzzz.tmp"]
    kept = [
        tmp_path / ".w.safetensors.fresh123.tmp",  # this process's time: maybe a live writer
        tmp_path / ".w.safetensors.toolong12.tmp",  # not the writer's pattern
        tmp_path / ".w.safetensors.ABCDEFGH.tmp",
        tmp_path / ".other.safetensors.ab12cd34.tmp",  # another target's
        tmp_path / "w.safetensors.ab12cd34.tmp",
    ]
    for p in stale + kept:
        p.write_bytes(b"x" * 100)
        if p.name != ".w.safetensors.fresh123.tmp":
            os.utime(p, (old, old))
    (tmp_path / ".w.safetensors.dir12345.tmp").mkdir()  # not a file: kept
    os.utime(tmp_path / ".w.safetensors.dir12345.tmp", (old, old))
    write_safetensors(path, ARRAYS)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept) and (tmp_path / ".w.safetensors.dir12345.tmp").is_dir()
    # through a symlink the leftovers are the target's, in the target's folder
    (tmp_path / "sub").mkdir()
    leftover = tmp_path / "sub" / ".t.safetensors.abcdefgh.tmp"
    leftover.write_bytes(b"x")
    os.utime(leftover, (old, old))
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "sub" / "t.safetensors")
    write_safetensors(tmp_path / "link.safetensors", ARRAYS)
    assert not leftover.exists()


def test_another_format_suffix_warns_with_the_name_to_use(tmp_path):
    model = wf.Sequential([wf.layers.Dense(2)]).build((None, 3))
    with pytest.warns(UserWarning, match=r"safetensors.*'.*w\.safetensors'"):
        model.save_weights(tmp_path / "w.h5")
    with pytest.warns(UserWarning, match="Keras 3 model archive"):
        wf.save_model(model, str(tmp_path / "m.keras"))
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "w.h5"]  # safetensors, whatever the name
