#!/usr/bin/env bash
# Installs the real peers the tests talk to: Orthanc with its DICOMweb plugin (Debian packages).
# gcp-storage-emulator comes from PyPI with the dev extras. Needs root (or sudo) for apt-get.
set -euo pipefail
if command -v Orthanc >/dev/null 2>&1 && ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb >/dev/null
