#!/usr/bin/env bash
# Regenerates the committed test PKI of fic-assertion with the openssl CLI (OpenSSL 3).
# Run from this directory: ./generate.sh   (the outputs are committed; tests never run this)
set -euo pipefail
cd "$(dirname "$0")"
DAYS=36500
PFX_PASSWORD='fic-rs test password'

# A test CA (RSA-2048). Its key is committed too: it serves as "some other RSA key" in the
# key/certificate mismatch tests.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ca.key.pem
openssl req -x509 -new -key ca.key.pem -sha256 -days "$DAYS" -subj "/CN=fic-rs test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt.pem

# The RSA-2048 leaf, issued by the CA: PKCS#8 and PKCS#1 keys, PEM and DER.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key.pem
openssl rsa -in rsa.key.pem -traditional -out rsa.pkcs1.pem
openssl pkcs8 -topk8 -nocrypt -in rsa.key.pem -outform DER -out rsa.key.der
openssl rsa -in rsa.key.pem -traditional -outform DER -out rsa.pkcs1.der
openssl req -new -key rsa.key.pem -subj "/CN=fic-rs test client (RSA)" -out rsa.csr.pem
openssl x509 -req -in rsa.csr.pem -CA ca.crt.pem -CAkey ca.key.pem -set_serial 2 -sha256 \
  -days "$DAYS" -extfile <(printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n') \
  -out rsa.crt.pem
rm rsa.csr.pem
openssl x509 -in rsa.crt.pem -outform DER -out rsa.crt.der
# Leaf, CA and key in one PEM (the order a user would typically concatenate them).
cat rsa.crt.pem ca.crt.pem rsa.key.pem > rsa.chain-and-key.pem

# PKCS#12 with the chain: modern (PBES2/AES-256-CBC, HMAC-SHA256) and legacy (3DES, SHA-1 MAC),
# as Windows and older tools export them.
openssl pkcs12 -export -inkey rsa.key.pem -in rsa.crt.pem -certfile ca.crt.pem \
  -name "fic-rs test client" -passout "pass:$PFX_PASSWORD" -out rsa.chain.pfx
openssl pkcs12 -export -inkey rsa.key.pem -in rsa.crt.pem -certfile ca.crt.pem \
  -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1 \
  -name "fic-rs test client" -passout "pass:$PFX_PASSWORD" -out rsa.chain.legacy.pfx
# A PKCS#12 with certificates only (no private key).
openssl pkcs12 -export -nokeys -in rsa.crt.pem -passout "pass:$PFX_PASSWORD" -out rsa.certonly.pfx

# ECDSA P-256, SEC1 ("EC PRIVATE KEY") form, self-signed.
openssl ecparam -name prime256v1 -genkey -noout -out ec-p256.sec1.pem
openssl req -x509 -new -key ec-p256.sec1.pem -sha256 -days "$DAYS" \
  -subj "/CN=fic-rs test client (P-256)" -out ec-p256.crt.pem
openssl ec -in ec-p256.sec1.pem -outform DER -out ec-p256.sec1.der

# Keys of types fic-assertion refuses: RSA-1024, P-521, Ed25519; and an encrypted PKCS#8 key.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.key.pem
openssl req -x509 -new -key rsa1024.key.pem -sha256 -days "$DAYS" -subj "/CN=fic-rs rsa1024" -out rsa1024.crt.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out ec-p521.key.pem
openssl genpkey -algorithm ED25519 -out ed25519.key.pem
openssl pkcs8 -topk8 -in rsa.key.pem -passout "pass:$PFX_PASSWORD" -v2 aes-256-cbc -out rsa.encrypted.key.pem
