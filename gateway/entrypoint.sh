#!/bin/sh
# Entry point of the gateway image: write the configuration that ECS passes in environment
# variables to files, then run the command, by default `python -m gateway.main`.
#
# gateway.main reads the AE configuration and the TLS files from paths, and the task's root
# filesystem is read-only. So each variable below that is set and not empty is written to a
# file in CIRRUS_RUN_DIR (a volume that only the gateway's user can write), and the variable
# that gateway.main reads is set to that file's path:
#
#   CIRRUS_AE_CONFIG_JSON       -> ae-config.json       CIRRUS_AE_CONFIG
#   CIRRUS_TLS_CERTIFICATE_PEM  -> tls-certificate.pem  CIRRUS_TLS_CERTIFICATE
#   CIRRUS_TLS_KEY_PEM          -> tls-key.pem          CIRRUS_TLS_KEY
#   CIRRUS_TLS_CA_PEM           -> tls-ca.pem           CIRRUS_TLS_CA
#
# The four variables are removed before the command starts, so the gateway's processes do not
# carry the private key in their environment. A variable that is empty or unset leaves the
# path variable as it was: with no TLS certificate and key, the gateway serves no TLS port.
set -eu
umask 077

run_dir="${CIRRUS_RUN_DIR:-/run/cirrus}"
if [ ! -d "$run_dir" ] || [ ! -w "$run_dir" ]; then
    echo "gateway entry point: $run_dir is not a writable folder; mount a volume there or set CIRRUS_RUN_DIR" >&2
    exit 2
fi

# write_file CONTENT FILE_NAME PATH_VARIABLE
write_file() {
    if [ -n "$1" ]; then
        printf '%s\n' "$1" >"$run_dir/$2"
        export "$3=$run_dir/$2"
    fi
}

write_file "${CIRRUS_AE_CONFIG_JSON:-}" ae-config.json CIRRUS_AE_CONFIG
write_file "${CIRRUS_TLS_CERTIFICATE_PEM:-}" tls-certificate.pem CIRRUS_TLS_CERTIFICATE
write_file "${CIRRUS_TLS_KEY_PEM:-}" tls-key.pem CIRRUS_TLS_KEY
write_file "${CIRRUS_TLS_CA_PEM:-}" tls-ca.pem CIRRUS_TLS_CA
unset CIRRUS_AE_CONFIG_JSON CIRRUS_TLS_CERTIFICATE_PEM CIRRUS_TLS_KEY_PEM CIRRUS_TLS_CA_PEM

exec "$@"
