# Test-only PKI for the VM tests, made at build time with openssl: a CA, a
# server certificate for "cache", client certificates for builder-01 (the
# writer), reader, and one whose subject holds two CNs (CN=builder-01,CN=reader
# as nginx prints it), which must not pass as the writer.
{ pkgs }:
pkgs.runCommand "kiss-vm-pki" { nativeBuildInputs = [ pkgs.openssl ]; } ''
  mkdir -p $out
  cd $out
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=kiss VM test CA" -keyout ca.key -out ca.pem
  issue() {
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr"
    printf '%b\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -extfile "$1.ext" -out "$1.pem"
  }
  issue cache "/CN=cache" "subjectAltName=DNS:cache\nextendedKeyUsage=serverAuth"
  issue builder-01 "/CN=builder-01" "extendedKeyUsage=clientAuth"
  issue reader "/CN=reader" "extendedKeyUsage=clientAuth"
  issue twocn "/CN=reader/CN=builder-01" "extendedKeyUsage=clientAuth"
  rm -f ./*.csr ./*.ext ./*.srl
''
