#!/usr/bin/env bash
# Set up a fresh machine for lazy_feature: the Debian Fashion-MNIST package (the default data
# set) and the Python package with its test extra. Safe to run again; run from the repo root.
set -euo pipefail
cd "$(dirname "$0")"
data=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$data" ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist
fi
python3 -m pip install -q -e ".[test]"
