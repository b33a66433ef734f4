#!/bin/sh
# tls-certs.sh DIR - make the TLS tests' certificates in DIR, fresh each
# run (no private key is ever committed). All keys are ECDSA P-256.
#   ca.pem ca.key             the test CA ("gev test CA")
#   server.pem server.key     CN=localhost, SAN DNS:localhost, IP:127.0.0.1
#   client.pem client.key     CN=gev client (a client certificate)
#   expired.pem expired.key   like server, but its validity ended yesterday
#   wronghost.pem .key        SAN DNS:wrong.example only
#   other.pem other.key       SAN DNS:other.test (a second name for SNI)
#   rogue-ca.pem rogue.pem rogue.key   a server cert from another CA
# Needs the openssl command line tool; exits 77 (skip) without it.
set -eu
dir=${1:?usage: tls-certs.sh DIR}
command -v openssl >/dev/null 2>&1 || { echo "SKIP: openssl not found"; exit 77; }
cd "$dir"
key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"; }
# sign NAME CN DAYS SAN [CA]
sign() {
  key "$1"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "${5:-ca}.pem" -CAkey "${5:-ca}.key" \
    -CAcreateserial -days "$3" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca() {
  key "$1"
  openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 2 -out "$1.pem"
}
ca ca "gev test CA"
ca rogue-ca "rogue CA"
sign server localhost 2 "DNS:localhost,IP:127.0.0.1"
sign client "gev client" 2 "DNS:client.test"
sign expired localhost -1 "DNS:localhost,IP:127.0.0.1"
sign wronghost wrong.example 2 "DNS:wrong.example"
sign other other.test 2 "DNS:other.test"
sign rogue localhost 2 "DNS:localhost,IP:127.0.0.1" rogue-ca
