import hashlib
import os

from pipeline.data import digests as digests_module
from pipeline.data.digests import FileDigests


def _counting_reads(monkeypatch) -> list[str]:
    read: list[str] = []
    original = digests_module._read_digest

    def counted(path: str) -> str:
        read.append(path)
        return original(path)

    monkeypatch.setattr(digests_module, "_read_digest", counted)
    return read


def test_digests_are_remembered_until_a_file_changes(tmp_path, monkeypatch):
    files = [tmp_path / f"{i}.bin" for i in range(5)]
    for i, path in enumerate(files):
        path.write_bytes(bytes([i]) * 100)
    db = tmp_path / "cache.sqlite"
    read = _counting_reads(monkeypatch)
    first = FileDigests(db).of([str(p) for p in files])
    assert first == [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    assert len(read) == 5

    read.clear()
    files[1].write_bytes(b"changed, and longer than before")
    stat = files[3].stat()
    files[3].write_bytes(bytes([9]) * 100)  # same size, new time
    os.utime(files[3], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    again = FileDigests(db).of([str(p) for p in files] + [str(tmp_path / "gone.bin")])
    assert read == [str(files[1]), str(files[3])]
    assert again[:5] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    assert again[5] == ""


def test_in_memory_digests_remember_nothing_between_instances(tmp_path, monkeypatch):
    path = tmp_path / "a.bin"
    path.write_bytes(b"a")
    read = _counting_reads(monkeypatch)
    FileDigests(":memory:").of([str(path)])
    FileDigests(":memory:").of([str(path)])
    assert len(read) == 2
