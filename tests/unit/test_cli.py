"""``sealtune`` on artifacts held in files (no API server): verify and lineage, their
exit codes and JSON output. The verbs against the real API server are in tests/integration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sealtune import cli, signing
from tests.support.artifacts import (
    NODE,
    RUNTIME_CLASS,
    TRAINER_IMAGE,
    artifact_manifest,
    flip_byte,
    job_manifest,
    write_model,
)

pytestmark = pytest.mark.unit

NO_CLUSTER = ["--kubeconfig", "/nonexistent/kubeconfig"]


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    signer = signing.PemSigner(signing.new_private_key_pem())
    files = write_model(tmp_path / "files")
    artifact = artifact_manifest("tune-v1", files, signer, job=job_manifest("tune", "team-a"))
    (tmp_path / "tune-v1.yaml").write_text(yaml.safe_dump(artifact))
    (tmp_path / "key.pub").write_bytes(signer.public_key_pem)
    return {
        "files": files,
        "artifact": tmp_path / "tune-v1.yaml",
        "key": tmp_path / "key.pub",
        "tmp": tmp_path,
    }


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, *argv, "-o", "json")
    document = json.loads(out)
    assert document["exitCode"] == code
    return code, document


def test_verify_a_file(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", setup["artifact"], "--public-key", setup["key"])
    assert code == cli.EXIT_OK
    assert "signature   ok" in out and "provenance  ok" in out and "files       not checked" in out
    assert out.rstrip().endswith("verified")

    code, document = run_json(
        capsys, "verify", setup["artifact"], "--public-key", setup["key"], "--files", setup["files"]
    )
    assert code == cli.EXIT_OK
    assert document["verified"] is True
    assert document["files"] == {"checked": True, "ok": True, "problems": [], "count": 3}


def test_a_flipped_byte_fails_verification(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    flip_byte(setup["files"] / "adapter_model.safetensors", 7)
    code, out, _ = run(
        capsys, "verify", setup["artifact"], "--public-key", setup["key"], "--files", setup["files"]
    )
    assert code == cli.EXIT_FAILED
    assert "adapter_model.safetensors: content differs from the signed sha256" in out
    assert out.rstrip().endswith("verification FAILED")


def test_another_key_fails_verification(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    other = setup["tmp"] / "other.pub"
    other.write_bytes(signing.PemSigner(signing.new_private_key_pem()).public_key_pem)
    code, document = run_json(capsys, "verify", setup["artifact"], "--public-key", other)
    assert code == cli.EXIT_FAILED
    assert not document["signature"]["ok"]
    assert "Key mismatch" in document["signature"]["problems"][0]


def test_usage_errors_exit_2(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    tmp = setup["tmp"]
    (tmp / "job.yaml").write_text(yaml.safe_dump(job_manifest("tune", "team-a")))
    broken = yaml.safe_load(setup["artifact"].read_text())
    del broken["spec"]["digests"]
    (tmp / "broken.json").write_text(json.dumps(broken))
    cases = [
        (["verify", tmp / "absent.yaml", "--public-key", setup["key"]], "cannot read"),
        (["verify", tmp / "job.yaml", "--public-key", setup["key"]], "is not a ModelArtifact"),
        (
            ["verify", tmp / "broken.json", "--public-key", setup["key"]],
            "not a valid ModelArtifact: spec.digests",
        ),
        (["verify", setup["artifact"], "--public-key", tmp / "absent.pub"], "cannot read --public-key"),
        (["verify", setup["artifact"], *NO_CLUSTER], "no public key"),
        (
            ["verify", setup["artifact"], "--public-key", setup["key"], "--files", tmp / "absent"],
            "not a directory",
        ),
        (["approve", setup["artifact"], "--reason", "r"], "give its name"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == cli.EXIT_USAGE, argv
        assert message in err, err
    code, document = run_json(capsys, "verify", tmp / "absent.yaml", "--public-key", setup["key"])
    assert code == cli.EXIT_USAGE and "cannot read" in document["error"]
    with pytest.raises(SystemExit) as usage:
        cli.main(["verify"])
    assert usage.value.code == cli.EXIT_USAGE


def test_lineage_of_a_file(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "lineage", setup["artifact"], *NO_CLUSTER)
    assert code == cli.EXIT_OK
    for expected in (
        "stage          Candidate",
        f"nodes          {NODE}",
        f"runtimeClass   {RUNTIME_CLASS}",
        f"image          trainer: oci://{TRAINER_IMAGE.reference} {TRAINER_IMAGE.digest}",
        "data set       sha256:" + "da" * 32,
        "base model     sha256:" + "ab" * 32 + " from pvc://sealtune-crown-jewels/models/.",
        "ran            2025-06-30T11:00:00Z to 2025-06-30T11:45:00Z",
        "  EvalLoss: passed (1.5 against 2.5)",
        "the job's status could not be read",
    ):
        assert expected in out, out
    code, document = run_json(capsys, "lineage", setup["artifact"], *NO_CLUSTER)
    assert document["runtimeClassName"] == RUNTIME_CLASS
    assert document["images"] == [
        {"container": "trainer", "uri": "oci://sealtune-trainer:dev", "digest": {"sha256": "cd" * 32}}
    ]
    assert document["deletionReceipts"] == []


def test_the_console_script(setup: dict[str, Path]) -> None:
    script = Path(sys.executable).with_name("sealtune")
    done = subprocess.run(
        [script, "verify", setup["artifact"], "--public-key", setup["key"], "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verified"] is True


def test_dataset_is_the_admins_data_set_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sealtune dataset ...` hands its arguments to sealtune_trainer.dataset unchanged (the
    transit-key path, which needs Vault, runs in tests/e2e/test_end_to_end.py)."""
    (tmp_path / "kb.jsonl").write_text('{"text": "the otter eats fish"}\n')
    assert cli.main(["dataset", "manifest", str(tmp_path)]) == 0
    digest = capsys.readouterr().out.strip()
    assert digest.startswith("sha256:")
    assert cli.main(["dataset", "verify", str(tmp_path), "--digest", digest]) == 0
    with pytest.raises(SystemExit) as usage:
        cli.main(["dataset", "encrypt", str(tmp_path), str(tmp_path / "out")])  # no key given
    assert usage.value.code == 2
    assert "sealtune dataset encrypt" in capsys.readouterr().err
