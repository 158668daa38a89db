"""Reading the inputs of a run, all before anything heavy is imported: the config
(validated against the contract), the data set (verified, decrypted in memory) and the base
model (verified file by file; transformers loads it later)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from sealtune_trainer import checkpoints, manifest, outputs, records, sealing
from sealtune_trainer.contract import TrainerConfig
from sealtune_trainer.errors import ConfigRefused, DataRejected, ModelRejected


def load_config(path: Path) -> TrainerConfig:
    try:
        return TrainerConfig.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ConfigRefused(f"cannot read config {path}: {exc.strerror}",
                            reason="ConfigUnreadable") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'config'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False))
        raise ConfigRefused(f"invalid config: {problems}", reason="ConfigInvalid") from None


def _key(config: TrainerConfig, file: str, reason: str) -> bytes:
    try:
        return sealing.load_key(Path(config.secrets_dir) / file)
    except (OSError, sealing.SealError) as exc:
        raise DataRejected(f"cannot use the key file {file}: {type(exc).__name__}", reason=reason) from None


def checkpoint_store(config: TrainerConfig) -> checkpoints.Store | None:
    """Where the run's checkpoints go and the key that seals them; None if it takes none."""
    root, file = config.output.checkpoint_dir, config.output.checkpoint_key_file
    # The contract requires both whenever checkpointEvery > 0.
    if not (config.training.checkpoint_every and root and file):
        return None
    outputs.refuse_planted_symlinks(Path(root))
    return checkpoints.Store(Path(root), _key(config, file, "CheckpointKeyUnusable"))


def verify_model(config: TrainerConfig) -> str:
    """Checks the base model's directory against its manifest, pinned by digest: every listed
    file's size and sha256, nothing unlisted, no symlink. Returns the digest."""
    root, expected = Path(config.model.path), config.model.manifest_digest
    path = root / outputs.MANIFEST_NAME
    if path.is_symlink():
        raise ModelRejected(f"base model: {outputs.MANIFEST_NAME} is a symlink")
    try:
        document = manifest.load(path)
    except manifest.ManifestError as exc:
        raise ModelRejected(f"base model: {exc}") from None
    digest = manifest.digest_of(document)
    if digest != expected:
        raise ModelRejected(f"base-model manifest digest is {digest}, expected {expected}")
    try:
        problems = manifest.verify(root, document, exclude=[outputs.MANIFEST_NAME])
    except OSError as exc:
        raise ModelRejected(f"base model: cannot read it ({type(exc).__name__})") from None
    if problems:
        raise ModelRejected(f"base model differs from its manifest in {len(problems)} "
                            f"way(s), first: {problems[0]}")
    return digest


def load_data(config: TrainerConfig) -> records.DataSet:
    key = None
    if config.data.encrypted and config.data.key_file:
        key = _key(config, config.data.key_file, "DataKeyUnusable")
    return records.load(Path(config.data.path), manifest_name=config.data.manifest_file,
                        expected_digest=config.data.manifest_digest,
                        encrypted=config.data.encrypted, key=key,
                        data_format=config.data.format)
