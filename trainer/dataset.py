"""Admin CLI for data sets: `python -m sealtune_trainer.dataset COMMAND`.

    keygen KEY_FILE                      a new random data key (base64, mode 0600)
    encrypt --key KEY_FILE SRC DST       seal every *.jsonl under SRC into DST, write DST's
                                         manifest and print its digest
    encrypt --transit-key NAME SRC DST   the same under a new data key from Vault transit
                                         (datakey/plaintext/NAME; VAULT_ADDR, VAULT_TOKEN):
                                         the key is used in memory only; prints
                                         `manifestDigest: ...` and `wrappedDataKey: ...`
    manifest DIR                         write DIR's manifest of its data files, print digest
    digest DIR                           print the digest of DIR's existing manifest
    verify DIR [--digest D] [--key K]    check every file against the manifest (and, with the
                                         key, authenticate every chunk, in memory)

The printed digest is what a DataDomain's `source.manifestDigest` and the trainer's
`data.manifestDigest` expect; the wrapped key is the domain's
`encryption.vaultTransit.wrappedDataKey`, which only Vault can unwrap. Nothing here prints data
or a plaintext key.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

from sealtune_trainer import manifest, records, sealing
from sealtune_trainer.errors import DataRejected

MANIFEST_NAME = "manifest.json"


class KeySourceError(Exception):
    """Vault did not hand out a data key (unreachable, no token, no such key, refused)."""


def _keygen(key_file: Path) -> None:
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(os.urandom(sealing.KEY_BYTES)) + b"\n")


def _transit_data_key(name: str, mount: str) -> tuple[bytes, str]:
    """A new data key from Vault transit: (plaintext, wrapped). The plaintext stays in this
    process's memory; the wrapped form is what the DataDomain records."""
    import hvac
    import hvac.exceptions

    # VAULT_ADDR and VAULT_TOKEN, as every Vault client reads them.
    client = hvac.Client()
    try:
        response = client.secrets.transit.generate_data_key(name, key_type="plaintext",
                                                            mount_point=mount)
    except hvac.exceptions.VaultError as exc:
        raise KeySourceError(f"Vault transit {mount}/datakey/plaintext/{name}: "
                             f"{type(exc).__name__}: {exc}") from None
    data = response["data"]
    return sealing.parse_key(data["plaintext"].encode()), str(data["ciphertext"])


def _encrypt(key: bytes, src: Path, dst: Path, chunk_bytes: int) -> str:
    plain = [rel for rel in records.data_files(src) if rel.endswith(records.PLAIN_SUFFIX)]
    if not plain:
        raise SystemExit(f"no *{records.PLAIN_SUFFIX} files under {src}")
    sealed = []
    for rel in plain:
        target = dst / (rel + ".sealed")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        with (src / rel).open("rb") as source, tmp.open("wb") as sink:
            sealing.seal_stream(source, sink, key, chunk_bytes)
        os.replace(tmp, target)
        sealed.append(rel + ".sealed")
    return manifest.write(dst / MANIFEST_NAME,
                          manifest.build(dst, sealed, encryption=sealing.SCHEME))


def _manifest(root: Path) -> str:
    files = records.data_files(root)
    kinds = {rel.endswith(records.SEALED_SUFFIX) for rel in files}
    if len(kinds) > 1:
        raise SystemExit("a data set is either all sealed or all plain, not a mix")
    encryption = sealing.SCHEME if kinds == {True} else records.ENCRYPTION_NONE
    try:
        return manifest.write(root / MANIFEST_NAME,
                              manifest.build(root, files, encryption=encryption))
    except manifest.ManifestError as exc:
        raise SystemExit(str(exc)) from None


def _verify(root: Path, digest: str | None, key_file: Path | None) -> list[str]:
    document = manifest.load(root / MANIFEST_NAME)
    actual = manifest.digest_of(document)
    if digest is not None and actual != digest:
        return [f"manifest digest is {actual}, expected {digest}"]
    if key_file is None:
        return manifest.verify(root, document, exclude=[MANIFEST_NAME])
    key = sealing.load_key(key_file)
    try:
        for _ in records.verified_contents(root, document, key, manifest_name=MANIFEST_NAME):
            pass
    except DataRejected as exc:
        return [exc.message]
    return []


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog,
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("keygen").add_argument("key_file", type=Path)
    encrypt = commands.add_parser("encrypt")
    key = encrypt.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", type=Path, help="file holding the data key")
    key.add_argument("--transit-key", help="Vault transit key that wraps a new data key")
    encrypt.add_argument("--transit-mount", default="transit")
    encrypt.add_argument("--chunk-bytes", type=int, default=sealing.DEFAULT_CHUNK_BYTES)
    encrypt.add_argument("src", type=Path)
    encrypt.add_argument("dst", type=Path)
    commands.add_parser("manifest").add_argument("dir", type=Path)
    commands.add_parser("digest").add_argument("dir", type=Path)
    verify = commands.add_parser("verify")
    verify.add_argument("dir", type=Path)
    verify.add_argument("--digest")
    verify.add_argument("--key", type=Path)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m sealtune_trainer.dataset") -> int:
    args = _parser(prog).parse_args(argv)
    try:
        if args.command == "keygen":
            _keygen(args.key_file)
        elif args.command == "encrypt" and args.transit_key:
            key, wrapped = _transit_data_key(args.transit_key, args.transit_mount)
            digest = _encrypt(key, args.src, args.dst, args.chunk_bytes)
            print(f"manifestDigest: {digest}\nwrappedDataKey: {wrapped}")
        elif args.command == "encrypt":
            print(_encrypt(sealing.load_key(args.key), args.src, args.dst, args.chunk_bytes))
        elif args.command == "manifest":
            print(_manifest(args.dir))
        elif args.command == "digest":
            print(manifest.digest_of(manifest.load(args.dir / MANIFEST_NAME)))
        else:
            problems = _verify(args.dir, args.digest, args.key)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                return 1
            print("verified")
    except (manifest.ManifestError, sealing.SealError, KeySourceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
