# Sourced by the other scripts: makes the build work on a machine without cmake.
# pingora-core builds libz-ng-sys, whose build script runs cmake. When cmake is missing we
# install the cmake wheel from PyPI into a private virtual environment under target/ (no root,
# nothing outside the repository is touched) and put it on PATH.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v cmake >/dev/null 2>&1; then
  tools="$repo_root/target/build-tools"
  if [ ! -x "$tools/bin/cmake" ]; then
    echo "cmake not found: installing it from PyPI into $tools" >&2
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check cmake
  fi
  export PATH="$tools/bin:$PATH"
fi
