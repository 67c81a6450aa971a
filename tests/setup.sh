#!/usr/bin/env bash
# Fetches what the tests need beyond pip: Debian tools and the real-speech corpus.
# Idempotent, and quick when everything is already in place.
set -euo pipefail

CACHE="${CALLGATE_TEST_CACHE:-$HOME/.cache/callgate}"
CORPUS="$CACHE/corpus/asterisk"
CORPUS_DEBS=(asterisk-core-sounds-en-wav asterisk-core-sounds-en)

say() { echo "setup.sh: $*" >&2; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# Runs an apt-get command; if it fails (stale or empty package lists), updates once and retries.
apt_retry() {
    "$@" && return 0
    is_root || { say "'$*' failed and only root can run apt-get update"; return 1; }
    say "'$*' failed; running apt-get update and retrying"
    apt-get update -qq
    "$@"
}

# need_debs PKG...: installs the packages that are not installed yet (as root).
need_debs() {
    local pkg missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    is_root || { say "missing ${missing[*]}: run as root, or: sudo apt-get install -y ${missing[*]}"; return 1; }
    DEBIAN_FRONTEND=noninteractive apt_retry apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The Asterisk core prompts (8 kHz WAV) and their transcripts, unpacked without installing.
fetch_corpus() {
    [[ -f $CORPUS/.complete ]] && return 0
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    say "fetching ${CORPUS_DEBS[*]}"
    (cd "$work" && apt_retry apt-get download -qq "${CORPUS_DEBS[@]}")
    mkdir -p "$work/tree"
    local deb
    for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/tree"; done
    local wavs
    wavs=$(find "$work/tree/usr/share/asterisk/sounds" -name '*.wav' | wc -l)
    if ((wavs < 500)) || [[ ! -f $work/tree/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz ]]; then
        say "unexpected package contents ($wavs WAV files)"
        return 1
    fi
    mkdir -p "$(dirname "$CORPUS")"
    rm -rf "$CORPUS"
    mv "$work/tree" "$CORPUS"
    touch "$CORPUS/.complete"
    say "corpus ready in $CORPUS ($wavs prompts)"
}

fetch_corpus
# redis-server: the shared call registry of the cluster tests (started by the tests on loopback).
# sip-tester (sipp, with its RTP pcaps) and baresip: the real SIP peers of the SIP tests.
# podman and debootstrap: the image tests build the Dockerfile from a debootstrap base.
need_debs redis-server sip-tester baresip podman debootstrap
