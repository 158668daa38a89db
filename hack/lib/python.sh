#!/usr/bin/env bash
# Creates (once) the project's virtual environment outside the repo, keyed by a hash of
# pyproject.toml, and installs this checkout into it. Prints the venv's path.
#   hack/lib/python.sh [EXTRAS]   EXTRAS defaults to "trainer,test"
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

extras=${1:-trainer,test}
# Keyed by what decides the installed packages, so editing tool settings rebuilds nothing.
key=$(python3 - "$REPO_ROOT/pyproject.toml" "$extras" <<'PY' | sha256sum | cut -c1-16
import sys, tomllib, json, platform
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(json.dumps([project["dependencies"], project["optional-dependencies"], sys.argv[2],
                  platform.python_version()], sort_keys=True))
PY
)
venv=$SEALTUNE_CACHE/venvs/$key
export UV_CACHE_DIR=${UV_CACHE_DIR:-$SEALTUNE_CACHE/uv} UV_NATIVE_TLS=1

if [ ! -f "$venv/.complete" ]; then
  start=$SECONDS
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check uv >&2
  uv=("$venv/bin/uv" pip install -q --python "$venv/bin/python")
  # deepspeed ships only an sdist whose setup.py imports torch, so torch goes in first
  # and deepspeed builds without isolation (its ops compile lazily, at first use).
  if [[ ,$extras, == *,trainer,* ]]; then
    "${uv[@]}" "torch>=2.8" setuptools wheel >&2
  fi
  DS_BUILD_OPS=0 "${uv[@]}" --no-build-isolation-package deepspeed "$REPO_ROOT[$extras]" >&2
  touch "$venv/.complete"
  log "python environment ready in $((SECONDS - start)) s: $venv"
fi
# The checkout itself, editable, so that a fresh clone elsewhere uses its own files (and the
# console scripts exist). Imports go through build/pypath, plain symlinks that map the package
# names onto operator/ and trainer/: unlike setuptools' import hook, mypy follows them.
"$venv/bin/uv" pip install -q --python "$venv/bin/python" --no-deps -e "$REPO_ROOT" >&2
mkdir -p "$REPO_ROOT/build/pypath"
ln -sfn ../../operator "$REPO_ROOT/build/pypath/sealtune"
ln -sfn ../../trainer "$REPO_ROOT/build/pypath/sealtune_trainer"
"$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))' \
  | xargs -I{} sh -c 'echo "$1" >"{}/00-sealtune-checkout.pth"' _ "$REPO_ROOT/build/pypath"
echo "$venv"
