"""A throwaway RFC 3161 time-stamping authority made with the real ``openssl ts``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _openssl(*args: str | Path) -> None:
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-subj", f"/CN={name}", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign")
    return key, cert


class Tsa:
    """A throwaway CA and TSA in a directory; ``reply`` answers a request like a real TSA."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        ca_key, self.root = _ca(d, "root")
        _, self.other_root = _ca(d, "other-root")
        key, csr, cert = d / "tsa.key", d / "tsa.csr", d / "tsa.pem"
        self.config = d / "openssl.cnf"
        self.config.write_text(f"""
[tsa_cert]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = critical,timeStamping

[tsa]
default_tsa = test_tsa

[test_tsa]
serial = {d / "serial"}
crypto_device = builtin
signer_cert = {cert}
signer_key = {key}
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
other_policies = 1.3.6.1.4.1.99999.2
digests = sha256
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
""")
        (d / "serial").write_text("01\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", "/CN=gpuplane test TSA")
        _openssl("x509", "-req", "-in", csr, "-CA", self.root, "-CAkey", ca_key,
                 "-set_serial", "2", "-days", "2", "-out", cert,
                 "-extfile", self.config, "-extensions", "tsa_cert")

    def reply(self, request: bytes) -> bytes:
        query, response = self.dir / "request.tsq", self.dir / "response.tsr"
        query.write_bytes(request)
        _openssl("ts", "-reply", "-config", self.config, "-queryfile", query, "-out", response)
        return response.read_bytes()

    def query_text(self, request: bytes) -> str:
        query = self.dir / "request.tsq"
        query.write_bytes(request)
        out = subprocess.run([OPENSSL, "ts", "-query", "-in", str(query), "-text"],
                             check=True, capture_output=True, text=True, timeout=60)
        return out.stdout
