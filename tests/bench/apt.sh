# Sourced by the scripts that prepare this machine (tests/bench/setup.sh, tests/vm/setup.sh,
# packaging/build.sh). `ensure_apt LABEL PKG...` installs those of PKG that are missing, and
# runs `apt-get update` at most once per shell (APT_UPDATED=1 afterwards). Safe with CI=true
# and no stdin; uses `sudo -n` when not root.
APT_UPDATED="${APT_UPDATED:-0}"

apt_sudo() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

apt_update_once() {
    ((APT_UPDATED)) && return 0
    DEBIAN_FRONTEND=noninteractive apt_sudo apt-get update -qq </dev/null
    APT_UPDATED=1
}

ensure_apt() {
    local label="$1" pkg
    shift
    local missing=()
    for pkg in "$@"; do
        [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" == "install ok installed" ]] \
            || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        echo "$label: apt packages present: $*"
        return 0
    fi
    echo "$label: installing apt packages: ${missing[*]}"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive apt_sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
}
