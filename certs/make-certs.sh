#!/bin/sh
# Makes a CA and the certificates a TLS ketch (or etcd) cluster needs, with openssl
# (installed on Debian by default: package `openssl`).
#
#   certs/make-certs.sh [-o DIR] [-H HOSTS] [-d DAYS] [-c CLIENT_CN]
#   certs/make-certs.sh -o DIR revoke NAME      # revoke DIR/NAME.pem, write DIR/crl.pem
#
#   -o DIR        output directory (default: ./certs-out)
#   -H HOSTS      comma-separated IPs and DNS names the member certificates are valid for
#                 (default: 127.0.0.1,localhost)
#   -d DAYS       validity (default: 365)
#   -c CLIENT_CN  common name of the client certificate: the user etcd's auth sees (default: root)
#
# Writes, in DIR:
#   ca.pem ca.key          the CA (--trusted-ca-file, --peer-trusted-ca-file, etcdctl --cacert)
#   server.pem server.key  client-facing member certificate (--cert-file, --key-file)
#   peer.pem peer.key      peer certificate, server and client usage (--peer-cert-file, --peer-key-file)
#   client.pem client.key  client certificate (etcdctl --cert, --key)
#   crl.pem                after `revoke`: the CA's revocation list (--client-crl-file, --peer-crl-file)
# An existing CA in DIR is reused, so more certificates can be signed by it later.
set -eu

out=./certs-out
hosts=127.0.0.1,localhost
days=365
client_cn=root
while getopts o:H:d:c: opt; do
    case $opt in
        o) out=$OPTARG ;;
        H) hosts=$OPTARG ;;
        d) days=$OPTARG ;;
        c) client_cn=$OPTARG ;;
        *) sed -n '2,24p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

command -v openssl >/dev/null || { echo "make-certs.sh: openssl not found (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
umask 077

# A minimal `openssl ca` setup, used to keep track of what was issued and for revocation.
ca_setup() {
    mkdir -p ca.db
    [ -f ca.db/index.txt ] || : > ca.db/index.txt
    [ -f ca.db/crlnumber ] || echo 01 > ca.db/crlnumber
    cat > ca.cnf <<CNF
[ ca ]
default_ca = ketch_ca
[ ketch_ca ]
database = ca.db/index.txt
crlnumber = ca.db/crlnumber
certificate = ca.pem
private_key = ca.key
default_md = sha256
default_crl_days = $days
CNF
}

if [ "${1:-}" = revoke ]; then
    name=${2:?usage: make-certs.sh -o DIR revoke NAME}
    ca_setup
    openssl ca -config ca.cnf -revoke "$name.pem" 2>/dev/null
    openssl ca -config ca.cnf -gencrl -out crl.pem 2>/dev/null
    echo "revoked $out/$name.pem; CRL in $out/crl.pem"
    exit 0
fi

san=""
for h in $(echo "$hosts" | tr ',' ' '); do
    case $h in
        *[!0-9.]*) case $h in *:*) kind=IP ;; *) kind=DNS ;; esac ;;
        *) kind=IP ;;
    esac
    san="${san:+$san,}$kind:$h"
done

if [ ! -f ca.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days "$days" -subj "/O=ketch/CN=ketch-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
fi

# sign NAME SUBJECT EXTENSIONS
sign() {
    printf '%s\n' "$3" > "$1.ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out "$1.pem" -days "$days" -sha256 -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
    # record it, so that `revoke` can find it
    ca_setup
    serial=$(openssl x509 -in "$1.pem" -noout -serial | cut -d= -f2)
    end=$(openssl x509 -in "$1.pem" -noout -enddate | cut -d= -f2)
    end=$(date -u -d "$end" +%y%m%d%H%M%SZ 2>/dev/null || echo 491231235959Z)
    subject=$(openssl x509 -in "$1.pem" -noout -subject -nameopt compat | sed 's/^subject=//')
    printf 'V\t%s\t\t%s\tunknown\t%s\n' "$end" "$serial" "$subject" >> ca.db/index.txt
}

usage="keyUsage=critical,digitalSignature,keyEncipherment"
sign server "/O=ketch/CN=ketch-server" "subjectAltName=$san
$usage
extendedKeyUsage=serverAuth,clientAuth"
sign peer "/O=ketch/CN=ketch-peer" "subjectAltName=$san
$usage
extendedKeyUsage=serverAuth,clientAuth"
sign client "/O=ketch/CN=$client_cn" "$usage
extendedKeyUsage=clientAuth"
chmod 644 ./*.pem

echo "wrote CA, server, peer and client certificates to $out (hosts: $san; client CN: $client_cn)"
