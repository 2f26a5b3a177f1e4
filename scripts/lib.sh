# Shared by scripts/run, scripts/test and scripts/bench: install what is
# missing from Debian's packages, and build.

# Runs a command as root (directly, or with sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages among "$@" that are not installed yet.
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}" >&2
        as_root apt-get update -q
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${missing[@]}"
    fi
}

BUILD_PACKAGES=(build-essential cmake pkg-config libmicrohttpd-dev libcurl4-openssl-dev
                libjansson-dev nettle-dev)
TEST_PACKAGES=(libcriterion-dev curl)

# build DIR [cmake options...]: configures (if needed) and builds.
build() {
    local dir=$1
    shift
    cmake -S . -B "$dir" "$@" >/dev/null
    cmake --build "$dir" -j"$(nproc)"
}
