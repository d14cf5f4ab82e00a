#!/usr/bin/env bash
# Installs the Debian packages camtrap needs, only those missing. Usage:
#   scripts/install-debian-deps.sh run    # to run the daemon: ffmpeg (the sample clip), venv
#   scripts/install-debian-deps.sh test   # plus mosquitto, the GStreamer RTSP server and
#                                         # chromium (the web interface's browser tests)
set -euo pipefail

run_pkgs=(python3-venv ffmpeg)
test_pkgs=(mosquitto mosquitto-clients openssl python3-gi gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly systemd chromium)

case "${1:-run}" in
  run) wanted=("${run_pkgs[@]}") ;;
  test) wanted=("${run_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
