"""A fleet CA made elsewhere, with openssl: what a user hands the collection as an input (tests of the PKI and of
AWX job slicing)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def existing_ca(directory: Path, passphrase: str | None) -> dict[str, Path]:
    """A fleet CA made elsewhere, with openssl (not with pki_ca): EC P-256 root and intermediate."""
    directory.mkdir()
    (directory / "intermediate.ext").write_text(
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
    )
    files = {name: directory / name for name in ("root.key", "root.pem", "intermediate.key", "intermediate.pem")}
    root_key, root, key, csr = files["root.key"], files["root.pem"], files["intermediate.key"], directory / "x.csr"
    ca_extensions = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    commands = [
        ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", root_key],
        ["req", "-x509", "-new", "-key", root_key, "-subj", "/CN=Contoso Fleet Root", "-days", "3000", *ca_extensions],
        ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key],
        ["req", "-new", "-key", key, "-subj", "/CN=Contoso Fleet Issuing", "-out", csr],
        [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            root,
            "-CAkey",
            root_key,
            "-CAcreateserial",
            "-days",
            "2000",
            "-sha256",
            "-extfile",
            directory / "intermediate.ext",
            "-out",
            files["intermediate.pem"],
        ],
    ]
    commands[1] += ["-sha256", "-out", root]
    for name in ("root.key", "intermediate.key") if passphrase else ():
        files[f"{name}.enc"] = directory / f"{name}.enc"
        commands.append(
            [
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-256-cbc",
                "-in",
                files[name],
                "-out",
                files[f"{name}.enc"],
                "-passout",
                f"pass:{passphrase}",
            ]
        )
    for command in commands:
        result = openssl(*map(str, command))
        assert result.returncode == 0, result.stderr
    if passphrase:
        files["root.key.enc"], files["intermediate.key.enc"] = (
            directory / "root.key.enc",
            directory / "intermediate.key.enc",
        )
    return files
