#!/usr/bin/env bash
# Set up a fresh machine for lazy_feature: the Debian Fashion-MNIST package (the default data
# set) and the Python package with its test extra. Safe to run again; run from the repo root.
set -euo pipefail

# apt-get as root, waiting while another apt process holds its lock (an unattended upgrade, a
# second setup): each try waits up to a minute for the lock, and a try that still finds it
# held is repeated, APT_LOCK_TRIES times, APT_LOCK_PAUSE seconds apart. Other failures stop.
apt_get() {
  local sudo="" try out
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  for ((try = 1; try <= ${APT_LOCK_TRIES:-10}; try++)); do
    if out=$($sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=60 "$@" 2>&1); then
      return 0
    fi
    if ! grep -q -E "Could not get lock|Unable to acquire the dpkg frontend lock" <<<"$out"; then
      echo "$out" >&2
      return 1
    fi
    echo "setup.sh: another apt process holds its lock (try $try): waiting" >&2
    sleep "${APT_LOCK_PAUSE:-30}"
  done
  echo "$out" >&2
  echo "setup.sh: the apt lock stayed held; rerun setup.sh once the other apt process ends" >&2
  return 1
}

main() {
  cd "$(dirname "$0")"
  if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    apt_get update -qq
    apt_get install -y -qq dataset-fashion-mnist
  fi
  python3 -m pip install -q -e ".[test]"
}

# Sourced (the tests do, for apt_get), it only defines the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
