#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One entry point for a fresh Debian 12 machine, run as root:
#   ./run.sh demo   set everything up, then run the demo on a throwaway local cluster
#   ./run.sh test   set everything up, then run every test (unit and functional)
#   ./run.sh setup  only set up, for development (apt packages of the test cluster and
#                   guests, .venv, editable install); a compute host needs far less:
#                   see doc/source/install.rst
# Extra arguments go to the demo or to pytest.
set -euo pipefail
cd "$(dirname "$0")"

# Ceph daemons for the throwaway cluster, the official rados/rbd bindings
# (not on PyPI), and the real clients we test against (QEMU, libvirt). The
# guests of the functional tests and the demo boot Debian's kernel with a
# busybox-static initramfs under libvirtd and qemu-system-x86 (TCG).
APT_PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd
              python3-venv qemu-utils qemu-block-extra libvirt-clients libxml2-utils
              python3-libvirt genisoimage qemu-system-x86 libvirt-daemon
              libvirt-daemon-driver-qemu libvirt-daemon-driver-storage-rbd
              linux-image-amd64 busybox-static ganeti openssh-server)

setup() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        if [ "$(id -u)" != 0 ]; then
            echo "run.sh: as root, install: ${missing[*]}" >&2
            exit 1
        fi
        echo "run.sh: installing ${missing[*]}" >&2
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    # --system-site-packages: the rados/rbd bindings live in Debian's dist-packages.
    if [ ! -x .venv/bin/python ]; then
        /usr/bin/python3 -m venv --system-site-packages .venv
    fi
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test,docs,bench,release,lint]'
}

cmd="${1:-}"
shift || true
case "$cmd" in
    setup) echo "run.sh: setting up for development (test cluster, guests, editable .venv);" \
                "a compute host needs far less: see doc/source/install.rst" >&2
           setup ;;
    demo) setup; exec .venv/bin/rbd-driver throwaway demo "$@" ;;
    test) setup; exec .venv/bin/pytest "$@" ;;
    *) echo "usage: ./run.sh demo|test|setup [args...]" >&2; exit 2 ;;
esac
