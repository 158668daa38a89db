from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sealtune_trainer import dataset, manifest, records, sealing
from sealtune_trainer.errors import DataRejected

pytestmark = pytest.mark.trainer

KEY = bytes(range(32))


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.jsonl").write_text('{"text": "one"}\n')
    (root / "sub" / "b.jsonl").write_text('{"text": "two"}\n{"text": "three"}\n')
    return root


def test_digest_ignores_formatting_but_not_content() -> None:
    document = {"version": 1, "files": [{"path": "a", "size": 1, "sha256": "0" * 64}]}
    pretty = json.loads(json.dumps(document, indent=4))
    assert manifest.digest_of(document) == manifest.digest_of(pretty)
    changed = {**document, "files": [{"path": "a", "size": 2, "sha256": "0" * 64}]}
    assert manifest.digest_of(changed) != manifest.digest_of(document)


def test_written_manifest_hashes_to_its_digest(tmp_path: Path) -> None:
    import hashlib

    root = _tree(tmp_path / "d")
    digest = manifest.write(root / "manifest.json", manifest.build(root, ["a.jsonl"]))
    assert digest == "sha256:" + hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()


def test_verify_detects_one_changed_byte_and_strays(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d")
    manifest.write(root / "manifest.json", manifest.build(root, ["a.jsonl", "sub/b.jsonl"]))
    document = manifest.load(root / "manifest.json")
    assert manifest.verify(root, document, exclude=["manifest.json"]) == []
    data = bytearray((root / "sub" / "b.jsonl").read_bytes())
    data[3] ^= 0x20
    (root / "sub" / "b.jsonl").write_bytes(bytes(data))
    (root / "stray.bin").write_bytes(b"x")
    problems = manifest.verify(root, document, exclude=["manifest.json"])
    assert problems == ["sub/b.jsonl: sha256 differs from the manifest",
                        "stray.bin: not in the manifest"]


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../b", "a//b", "./a", "a\\b", ""])
def test_paths_outside_the_root_are_refused(path: str) -> None:
    with pytest.raises(manifest.ManifestError):
        manifest.check_relative_path(path)


def test_empty_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(manifest.ManifestError):
        manifest.build(tmp_path, [])
    with pytest.raises(manifest.ManifestError):
        manifest.entries_of({"version": 1, "files": []})


def _load(root: Path, digest: str, key: bytes | None = None) -> records.DataSet:
    return records.load(root, manifest_name="manifest.json", expected_digest=digest,
                        encrypted=key is not None, key=key, data_format="text")


def test_plain_data_set_loads_only_with_its_digest(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "d")
    assert dataset.main(["manifest", str(root)]) == 0
    digest = capsys.readouterr().out.strip()
    loaded = _load(root, digest)
    assert [r["text"] for r in loaded.records] == ["one", "two", "three"]
    assert loaded.manifest_digest == digest
    with pytest.raises(DataRejected, match="expected sha256:0") as caught:
        _load(root, "sha256:" + "0" * 64)
    assert caught.value.reason == "DataDigestMismatch"


def test_changed_file_and_unlisted_file_are_rejected(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d")
    digest = manifest.write(root / "manifest.json",
                            manifest.build(root, ["a.jsonl", "sub/b.jsonl"],
                                           encryption="none"))
    (root / "a.jsonl").write_text('{"text": "One"}\n')
    with pytest.raises(DataRejected) as caught:
        _load(root, digest)
    assert caught.value.reason == "DataDigestMismatch"
    (root / "a.jsonl").write_text('{"text": "one"}\n')
    (root / "extra.jsonl").write_text('{"text": "smuggled"}\n')
    with pytest.raises(DataRejected) as caught:
        _load(root, digest)
    assert caught.value.reason == "DataUnlisted"


def test_encrypt_cli_seals_and_verifies(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = _tree(tmp_path / "plain")
    key_file = tmp_path / "key"
    assert dataset.main(["keygen", str(key_file)]) == 0
    assert dataset.main(["encrypt", "--key", str(key_file), "--chunk-bytes", "8",
                         str(src), str(tmp_path / "sealed")]) == 0
    digest = capsys.readouterr().out.strip()
    sealed = tmp_path / "sealed"
    assert sorted(p.name for p in sealed.rglob("*") if p.is_file()) == [
        "a.jsonl.sealed", "b.jsonl.sealed", "manifest.json"]
    assert b"three" not in (sealed / "sub" / "b.jsonl.sealed").read_bytes()
    assert dataset.main(["verify", str(sealed), "--digest", digest, "--key",
                         str(key_file)]) == 0
    assert dataset.main(["digest", str(sealed)]) == 0
    assert capsys.readouterr().out.split()[-1] == digest
    key = sealing.load_key(key_file)
    assert [r["text"] for r in _load(sealed, digest, key).records] == ["one", "two", "three"]
    with pytest.raises(DataRejected) as caught:
        _load(sealed, digest, bytes(32))
    assert caught.value.reason == "DataDecryptFailed"


def test_malformed_records_are_reported_without_content(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.jsonl").write_text('{"text": "fine"}\n{"prompt": "SECRET-VALUE"}\n')
    digest = manifest.write(root / "manifest.json", manifest.build(root, ["a.jsonl"]))
    with pytest.raises(DataRejected) as caught:
        _load(root, digest)
    assert caught.value.message == "a.jsonl line 2: not a text record"


def test_verify_follows_no_symlink_and_reads_no_fifo(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d")
    manifest.write(root / "manifest.json", manifest.build(root, ["a.jsonl", "sub/b.jsonl"]))
    document = manifest.load(root / "manifest.json")
    # The same bytes behind a link, a linked directory and a FIFO that would block a read.
    (tmp_path / "b.jsonl").write_bytes((root / "sub" / "b.jsonl").read_bytes())
    (root / "sub" / "b.jsonl").unlink()
    (root / "sub" / "b.jsonl").symlink_to(tmp_path / "b.jsonl")
    (root / "linked").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(root / "pipe")
    assert manifest.walk(root) == (["a.jsonl", "manifest.json"], ["linked", "pipe", "sub/b.jsonl"])
    assert manifest.verify(root, document, exclude=["manifest.json"]) == [
        "sub/b.jsonl: missing", "linked: a symlink or a special file",
        "pipe: a symlink or a special file", "sub/b.jsonl: a symlink or a special file"]
    with pytest.raises(manifest.ManifestError, match="linked is a symlink"):
        manifest.regular_files(root)
