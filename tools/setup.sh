# Creates .venv beside the repository (if missing), installs requirements.txt into it whenever the
# file changed, and puts .venv/bin first on PATH. Source it (`source tools/setup.sh`): it leaves
# the shell's options and working folder as they were. demo.sh and test.sh source it too.
_lidc_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if (
  set -euo pipefail
  cd "$_lidc_root"
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON3:-python3}" -m venv .venv
  fi
  want=$(sha1sum requirements.txt | cut -d' ' -f1)
  if [ "$(cat .venv/.requirements.sha1 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --quiet -r requirements.txt
    echo "$want" > .venv/.requirements.sha1
  fi
); then
  case ":$PATH:" in
    *":$_lidc_root/.venv/bin:"*) ;;
    *) export PATH="$_lidc_root/.venv/bin:$PATH" ;;
  esac
  unset _lidc_root
else
  echo "tools/setup.sh: setting up $_lidc_root/.venv failed (see above)" >&2
  unset _lidc_root
  return 1 2>/dev/null || exit 1
fi
