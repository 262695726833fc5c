# Sourced by the fetch scripts: an APT configuration private to one folder, so Debian
# packages of another suite can be downloaded without touching the system's sources.
#
# private_apt APT_ROOT SUITE WHO: write APT_ROOT/apt.conf listing only SUITE, update its
# index, and exit 2 (with a line naming WHO) when the mirror cannot be reached.
private_apt() {
    local apt_root=$1 suite=$2 who=$3
    mkdir -p "$apt_root"/{lists/partial,archives/partial,etc/preferences.d,etc/apt.conf.d,etc/sources.list.d,debs}
    echo "deb http://deb.debian.org/debian $suite main" >"$apt_root/etc/sources.list"
    : >"$apt_root/status"
    cat >"$apt_root/apt.conf" <<CONF
Dir::State "$apt_root";
Dir::State::Lists "$apt_root/lists";
Dir::State::status "$apt_root/status";
Dir::Cache "$apt_root";
Dir::Cache::archives "$apt_root/archives";
Dir::Etc::SourceList "$apt_root/etc/sources.list";
Dir::Etc::SourceParts "$apt_root/etc/sources.list.d";
Dir::Etc::Preferences "$apt_root/etc/preferences";
Dir::Etc::PreferencesParts "$apt_root/etc/preferences.d";
Dir::Etc::Parts "$apt_root/etc/apt.conf.d";
APT::Architecture "amd64";
APT::Sandbox::User "root";
Acquire::Languages "none";
CONF
    if ! APT_CONFIG="$apt_root/apt.conf" apt-get update -qq 2>"$apt_root/update.log" ||
        grep -q '^[EW]:' "$apt_root/update.log"; then
        echo "$who: the Debian $suite mirror is unreachable (see $apt_root/update.log)" >&2
        exit 2
    fi
}
