# Sourced by the scripts that install Debian packages (system-deps.sh,
# cross-deps.sh):
#   . scripts/apt.sh
#   as_root CMD ARGS...            CMD as root: directly, or through sudo
#   apt_install WHAT PACKAGE...    apt-get install PACKAGE... (none: nothing)
# WHAT says in the message what the packages are for.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
    return
  fi
  command -v sudo >/dev/null 2>&1 \
    || { echo "krepair: need root (or sudo) to run: $*" >&2; return 1; }
  sudo "$@"
}
apt_install() {
  local what=$1
  shift
  [ $# -gt 0 ] || return 0
  echo "krepair: installing system packages ($what): $*" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
