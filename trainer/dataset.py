"""Admin CLI for data sets: `python -m sealtune_trainer.dataset COMMAND`.

    keygen KEY_FILE                      a new random data key (base64, mode 0600)
    encrypt --key KEY_FILE SRC DST       seal every *.jsonl under SRC into DST, write DST's
                                         manifest and print its digest
    manifest DIR                         write DIR's manifest of its data files, print digest
    digest DIR                           print the digest of DIR's existing manifest
    verify DIR [--digest D] [--key K]    check every file against the manifest (and, with the
                                         key, authenticate every chunk, in memory)

The printed digest is what a DataDomain's `digest` and the trainer's `data.manifestDigest`
expect. Nothing here prints data.
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


def _keygen(key_file: Path) -> None:
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(os.urandom(sealing.KEY_BYTES)) + b"\n")


def _encrypt(key_file: Path, src: Path, dst: Path, chunk_bytes: int) -> str:
    key = sealing.load_key(key_file)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sealtune_trainer.dataset",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("keygen").add_argument("key_file", type=Path)
    encrypt = commands.add_parser("encrypt")
    encrypt.add_argument("--key", type=Path, required=True)
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "keygen":
            _keygen(args.key_file)
        elif args.command == "encrypt":
            print(_encrypt(args.key, args.src, args.dst, args.chunk_bytes))
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
    except (manifest.ManifestError, sealing.SealError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
